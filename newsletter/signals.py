"""Stopping a long command cleanly: SIGTERM and SIGHUP become Ctrl-C, or a call.

`kill`, systemd or docker stopping the process, or its terminal closing, would otherwise
end it at once: a send would leave the messages in flight `uncertain`, an import its
rejects file half-written. Only signals still at their default are taken over (nohup's
ignored SIGHUP stays ignored), and only from the main thread. The first signal puts the
previous handlers back, so a second one ends the process.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

_TERMINATING = ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGHUP, signal.SIG_DFL))


def _take_over(
    signals: tuple[tuple[int, Any], ...], on_signal: Callable[[int], None]
) -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    replaced: dict[int, Any] = {}

    def restore() -> None:
        while replaced:
            sig, handler = replaced.popitem()
            signal.signal(sig, handler)

    def handler(signum: int, frame: object) -> None:
        restore()
        on_signal(signum)

    for sig, default in signals:
        if signal.getsignal(sig) is default:
            replaced[sig] = signal.signal(sig, handler)
    return restore


def stop_signals_as_ctrl_c(stopped_by: list[int] | None = None) -> Callable[[], None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt; returns what restores the handlers.

    They then unwind like Ctrl-C (an import rolls back). `stopped_by` receives the
    signal's number (for an exit code of 128 + signal).
    """

    def stop(signum: int) -> None:
        if stopped_by is not None:
            stopped_by.append(signum)
        raise KeyboardInterrupt

    return _take_over(_TERMINATING, stop)


def stop_signals_call(stop: Callable[[], None]) -> Callable[[], None]:
    """Ctrl-C, SIGTERM and SIGHUP call `stop()` instead of raising; returns what restores.

    For a thread that must not be interrupted mid-transaction (the send engine's database
    thread: an exception there could lose a worker's answer).
    """
    return _take_over(((signal.SIGINT, signal.default_int_handler), *_TERMINATING),
                      lambda signum: stop())
