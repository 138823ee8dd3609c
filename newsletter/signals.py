"""Stopping a long command cleanly: SIGTERM and SIGHUP become Ctrl-C.

`kill`, systemd or docker stopping the process, or its terminal closing, would otherwise
end it at once: a send would leave the messages in flight `uncertain`, an import its
rejects file half-written. As KeyboardInterrupt they unwind like Ctrl-C (a send records
the answers it is waiting for, an import rolls back). Only signals that would kill are
taken over (nohup's ignored SIGHUP stays ignored), and only from the main thread.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any


def stop_signals_as_ctrl_c(stopped_by: list[int] | None = None) -> Callable[[], None]:
    """Install the handlers; returns what restores the previous ones.

    `stopped_by` receives the signal's number (for an exit code of 128 + signal). A second
    signal is not caught: it ends the process.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    replaced: dict[int, Any] = {}

    def restore() -> None:
        while replaced:
            sig, handler = replaced.popitem()
            signal.signal(sig, handler)

    def stop(signum: int, frame: object) -> None:
        if stopped_by is not None:
            stopped_by.append(signum)
        restore()
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            replaced[sig] = signal.signal(sig, stop)
    return restore
