"""Deciding what a backup re-reads: the change rule against its parent, and units of bounded bytes."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.sources.files import Entry

#: A file whose mtime or ctime is this close to (or after) the parent's start is re-read: the parent
#: may have read it mid-write, or within the file system's timestamp granularity.
GRANULARITY_NS = 2_000_000_000


@dataclass
class Unit:
    """Files one worker reads; bounded in bytes so any unit finishes well inside a task's time limit."""

    number: int
    entries: list[Entry] = field(default_factory=list)
    bytes: int = 0


def is_unchanged(entry: Entry, previous: Entry | None, parent_started_ns: int) -> bool:
    """Whether `entry` may reuse the parent's chunks without being read (docs/BACKUP.md)."""
    if previous is None or previous.type != "file" or entry.type != "file":
        return False
    if (entry.size, entry.mtime_ns, entry.ctime_ns, entry.inode) != (
        previous.size,
        previous.mtime_ns,
        previous.ctime_ns,
        previous.inode,
    ):
        return False
    cutoff = parent_started_ns - GRANULARITY_NS
    return previous.mtime_ns < cutoff and previous.ctime_ns < cutoff


def plan_reads(
    entries: list[Entry], parent: dict[str, Entry] | None, parent_started_ns: int
) -> tuple[list[Entry], int]:
    """Fill reused files' chunks from the parent; return the files to read and the count reused."""
    to_read: list[Entry] = []
    reused = 0
    for entry in entries:
        if entry.type != "file":
            continue
        previous = parent.get(entry.path) if parent is not None else None
        if previous is not None and is_unchanged(entry, previous, parent_started_ns):
            entry.chunks = list(previous.chunks)
            reused += 1
        else:
            to_read.append(entry)
    return to_read, reused


#: Units per process when a backup is spread over this machine's processes: enough that the last
#: unit to finish is small (units are started biggest first), few enough that their fixed cost (a
#: claim, an input and a result object, a partial last pack) stays small.
UNITS_PER_PROCESS = 4
MIN_UNIT_BYTES = 8 << 20


def unit_bytes_for(limit: int, total: int, parallelism: int) -> int:
    """The unit size: `limit` (BACKUP_UNIT_BYTES), smaller when that would leave processes idle."""
    if parallelism <= 1:
        return limit
    share = -(-total // (parallelism * UNITS_PER_PROCESS))
    return max(1, min(limit, max(MIN_UNIT_BYTES, share)))


def split_units(files: list[Entry], unit_bytes: int) -> list[Unit]:
    """Group files in order into units of about `unit_bytes`; a bigger file is a unit of its own."""
    units: list[Unit] = []
    current = Unit(0)
    for entry in files:
        if current.entries and current.bytes + entry.size > unit_bytes:
            units.append(current)
            current = Unit(len(units))
        current.entries.append(entry)
        current.bytes += entry.size
    if current.entries:
        units.append(current)
    return units
