"""WAL file names (docs/WAL.md section 1): their kind, timeline and position, and the object names
they are stored under. Standard library only: the spool's fast path imports it."""

from __future__ import annotations

import re
from typing import NamedTuple

from app.errors import WalError

SEGMENT = "segment"
PARTIAL = "partial"
HISTORY = "history"
BACKUP = "backup"

MIN_SEGMENT_SIZE = 1 << 20
MAX_SEGMENT_SIZE = 1 << 30
#: A segment name's middle word counts units of 4 GiB of WAL.
LOG_SPAN = 1 << 32

_SEGMENT = re.compile(r"([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})")
_PARTIAL = re.compile(r"([0-9A-F]{24})\.partial")
_HISTORY = re.compile(r"([0-9A-F]{8})\.history")
_BACKUP = re.compile(r"([0-9A-F]{24})\.([0-9A-F]{8})\.backup")


class WalName(NamedTuple):  # not a dataclass: importing dataclasses costs the spool's fast path ~18 ms
    """A parsed WAL file name. `log` and `seg` are None for a history file."""

    name: str
    kind: str
    timeline: int
    log: int | None = None
    seg: int | None = None

    @property
    def is_segment(self) -> bool:
        return self.kind == SEGMENT

    @property
    def segment_name(self) -> str | None:
        """The segment this file belongs to (itself for a segment; None for a history file)."""
        return None if self.log is None else self.name[:24]

    def segno(self, segment_size: int) -> int | None:
        """The absolute segment number; WalError if the name cannot belong to this segment size."""
        if self.log is None or self.seg is None:
            return None
        per_log = segments_per_log(segment_size)
        if self.seg >= per_log:
            raise WalError(
                f"WAL file {self.name} cannot belong to a cluster with {segment_size >> 20} MiB segments",
                hint="the source's segment size was recorded from its first segment; "
                "is another cluster archiving into this source?",
            )
        return self.log * per_log + self.seg


def parse(name: str) -> WalName:
    """The WAL name `name`; WalError if it is none of the four kinds PostgreSQL archives."""
    if match := _SEGMENT.fullmatch(name):
        return WalName(name, SEGMENT, *(int(part, 16) for part in match.groups()))
    if match := _PARTIAL.fullmatch(name):
        return WalName(name, PARTIAL, *_position(match.group(1)))
    if match := _BACKUP.fullmatch(name):
        return WalName(name, BACKUP, *_position(match.group(1)))
    if match := _HISTORY.fullmatch(name):
        return WalName(name, HISTORY, int(match.group(1), 16))
    raise WalError(
        f"{name!r} is not a WAL file name",
        hint="expected a segment (24 hex digits), a .partial or .backup file, or a timeline .history file",
    )


def is_wal_name(name: str) -> bool:
    try:
        parse(name)
    except WalError:
        return False
    return True


def _position(segment: str) -> tuple[int, int, int]:
    return int(segment[0:8], 16), int(segment[8:16], 16), int(segment[16:24], 16)


def is_segment_size(size: int) -> bool:
    return MIN_SEGMENT_SIZE <= size <= MAX_SEGMENT_SIZE and size & (size - 1) == 0


def segments_per_log(segment_size: int) -> int:
    if not is_segment_size(segment_size):
        raise WalError(f"{segment_size} bytes is not a WAL segment size (a power of two, 1 MiB to 1 GiB)")
    return LOG_SPAN // segment_size


def segment_name(timeline: int, segno: int, segment_size: int) -> str:
    per_log = segments_per_log(segment_size)
    return f"{timeline:08X}{segno // per_log:08X}{segno % per_log:08X}"


def following(name: WalName, segment_size: int, count: int) -> list[str]:
    """The `count` segment names after segment `name` on its timeline."""
    segno = name.segno(segment_size)
    if segno is None or not name.is_segment:
        return []
    return [segment_name(name.timeline, segno + step, segment_size) for step in range(1, count + 1)]


def object_name(source: str, name: str) -> str:
    """The storage name of WAL file `name` of `source`: `<source>-<name>` (also the envelope's id)."""
    return f"{source}-{name}"


def split_object_name(object_name: str) -> tuple[str, str] | None:
    """(source, WAL name) of an object name, or None if it is not one. Splits at the last '-'."""
    source, sep, name = object_name.rpartition("-")
    if not sep or not source or not is_wal_name(name):
        return None
    return source, name


def timeline_prefix(source: str, timeline: int) -> str:
    """The object-name prefix of every file of `source` on `timeline` (its history file included)."""
    return f"{source}-{timeline:08X}"
