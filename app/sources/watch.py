"""A walk's running count of the bytes a backup will read, with an action fired once it passes a
threshold (the local backup engine starts its worker processes then, so their start-up overlaps the
rest of the walk)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.sources.files import Entry


class SizeWatch:
    def __init__(self, threshold: int, action: Callable[[], None]) -> None:
        self.threshold, self.action = threshold, action
        self.total = 0
        self.fired = False
        #: Which entries will be read (set by the planner once it knows the parent): all by default.
        self.counts: Callable[[Entry], bool] = lambda entry: entry.type == "file"

    def add(self, entry: Entry) -> None:
        if self.fired or not self.counts(entry):
            return
        self.total += entry.size
        if self.total >= self.threshold:
            self.fired = True
            self.action()
