"""A bandwidth limit shared by the threads of one verification (a token bucket of one second)."""

from __future__ import annotations

import threading
import time


class Bandwidth:
    """`take(n)` returns once `n` more bytes fit under `bytes_per_second`; 0 means no limit."""

    def __init__(self, bytes_per_second: int) -> None:
        self.rate = bytes_per_second
        self._lock = threading.Lock()
        self._next_free = time.monotonic()

    def take(self, nbytes: int) -> None:
        if self.rate <= 0 or nbytes <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_free)
            self._next_free = start + nbytes / self.rate
        # Start the read when the bytes before it have had their time: a burst of one second is allowed.
        delay = start - now - 1.0
        if delay > 0:
            time.sleep(delay)
