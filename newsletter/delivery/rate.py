"""Pacing shared by every worker of a send."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Shared by all workers: `rate` units per second (None or 0: no limit), plus pauses.

    Each caller reserves the next free slot, so N workers together keep the rate.
    `clock` is a monotonic clock in seconds (a test passes one it moves by hand).
    """

    def __init__(self, rate: float | None, *, clock: Callable[[], float] = time.monotonic):
        self.interval = 1.0 / rate if rate else 0.0
        self.clock = clock
        self.lock = threading.Lock()
        self.next_free = 0.0
        self.paused_until = 0.0

    def reserve(self, units: int = 1) -> float:
        """Reserve `units` and return how long to wait before using them."""
        with self.lock:
            now = self.clock()
            start = max(now, self.next_free, self.paused_until)
            if self.interval:
                self.next_free = start + units * self.interval
            return start - now

    def pause(self, seconds: float) -> None:
        """Nobody starts a request for `seconds` (the provider said: slow down)."""
        with self.lock:
            self.paused_until = max(self.paused_until, self.clock() + seconds)
