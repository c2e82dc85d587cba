"""A walk's running byte count, with an action fired once it passes a threshold (the local backup
engine starts its worker processes then, so their start-up overlaps the rest of the walk)."""

from __future__ import annotations

from collections.abc import Callable


class SizeWatch:
    def __init__(self, threshold: int, action: Callable[[], None]) -> None:
        self.threshold, self.action = threshold, action
        self.total = 0
        self.fired = False

    def add(self, nbytes: int) -> None:
        self.total += nbytes
        if not self.fired and self.total >= self.threshold:
            self.fired = True
            self.action()
