"""Timeline history files (`00000002.history`): which timeline each one branched from, and where.

PostgreSQL writes one per promotion; line `P<TAB>X/Y<TAB>reason` says timeline P ended at X/Y. The
history of timeline N lists every ancestor, oldest first, so it alone gives the path to N.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import IntegrityError
from app.wal import lsn


@dataclass(frozen=True)
class TimelineSpan:
    """Timeline `timeline` holds the WAL from `begin` up to (not including) `end`; None: no end yet."""

    timeline: int
    begin: int
    end: int | None


def parse_history(timeline: int, text: str) -> list[tuple[int, int]]:
    """(parent timeline, switch position) for each ancestor of `timeline`, oldest first."""
    found: list[tuple[int, int]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        try:
            parent, switch = int(fields[0]), lsn.parse(fields[1])
        except (ValueError, IndexError):
            raise IntegrityError(
                f"timeline history {timeline:08X}.history has a malformed line: {line!r}"
            ) from None
        if found and (parent <= found[-1][0] or switch < found[-1][1]):
            raise IntegrityError(f"timeline history {timeline:08X}.history is not in order")
        found.append((parent, switch))
    if found and found[-1][0] >= timeline:
        raise IntegrityError(f"timeline history {timeline:08X}.history names a parent that is not older")
    return found


def path_to(timeline: int, histories: dict[int, list[tuple[int, int]]]) -> list[TimelineSpan]:
    """The spans of WAL that lead to `timeline`, oldest first (just `timeline` if it has no history)."""
    ancestors = histories.get(timeline, [])
    spans: list[TimelineSpan] = []
    begin = 0
    for parent, switch in ancestors:
        spans.append(TimelineSpan(parent, begin, switch))
        begin = switch
    spans.append(TimelineSpan(timeline, begin, None))
    return spans


def newest_timeline(start: int, histories: dict[int, list[tuple[int, int]]]) -> int:
    """What `recovery_target_timeline = 'latest'` picks: PostgreSQL probes `start + 1`, `start + 2`, …
    and stops at the first history file that is not archived."""
    newest = start
    while newest + 1 in histories:
        newest += 1
    return newest
