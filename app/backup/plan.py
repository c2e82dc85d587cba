"""Deciding what a backup re-reads: the change rule against its parent, and units of bounded bytes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from app.sources.files import Entry

#: A file whose mtime or ctime is this close to (or after) the parent's start is re-read: the parent
#: may have read it mid-write, or within the file system's timestamp granularity.
GRANULARITY_NS = 2_000_000_000


#: A file bigger than this is read in pieces of this size at fixed offsets (0, PIECE_BYTES, ...), each
#: a work item of its own, so one big file (a PostgreSQL relation segment, a disk image) is read by
#: several processes or hosts at once. Each piece is cut into chunks on its own, so chunk boundaries
#: restart at every piece offset; the offsets being fixed, unchanged content dedups as before.
PIECE_BYTES = 32 << 20


@dataclass
class Item:
    """One unit's work on one file: all of it (`length` None, `offset` 0), or the piece from `offset`,
    `length` bytes long (None for the last piece: to the end of the file as it is when read)."""

    entry: Entry
    offset: int = 0
    length: int | None = None
    is_piece: bool = False

    @property
    def size(self) -> int:
        return self.length if self.length is not None else max(0, self.entry.size - self.offset)

    def to_json(self) -> dict[str, Any]:
        doc = self.entry.to_json()
        if self.entry.device:
            doc["device"] = self.entry.device  # with the inode: what the walk saw (app/sources/confined.py)
        if self.is_piece:
            doc["piece"] = {"offset": self.offset, "length": self.length}
        return doc


@dataclass
class Unit:
    """Files one worker reads; bounded in bytes so any unit finishes well inside a task's time limit."""

    number: int
    items: list[Item] = field(default_factory=list)
    bytes: int = 0
    cost: int = 0  # bytes, plus ITEM_COST_BYTES per item in a guided plan


def is_unchanged(entry: Entry, previous: dict[str, Any] | None, parent_started_ns: int) -> bool:
    """Whether `entry` may reuse the parent's chunks without being read (docs/BACKUP.md). `previous`
    is the parent manifest's entry for the same path, as stored."""
    if previous is None or previous["type"] != "file" or entry.type != "file":
        return False
    cutoff = parent_started_ns - GRANULARITY_NS
    return _same_file(previous, entry.size, entry.mtime_ns, entry.ctime_ns, entry.inode, cutoff)


def _same_file(previous: dict[str, Any], size: int, mtime_ns: int, ctime_ns: int, inode: int, cutoff: int) -> bool:
    """Rules 2 and 3 of the change rule for a file whose parent entry is `previous` (a `file`):
    size, mtime, ctime and inode as recorded, and both times older than `cutoff` (the parent's start
    less GRANULARITY_NS)."""
    return bool(
        previous["mtime_ns"] == mtime_ns
        and previous.get("ctime_ns", 0) == ctime_ns
        and previous.get("size", 0) == size
        and previous.get("inode", 0) == inode
        and mtime_ns < cutoff
        and ctime_ns < cutoff
    )


@dataclass
class Parent:
    """The parent backup's files by path (manifest entries as stored) and when it started."""

    files: dict[str, dict[str, Any]]
    started_ns: int

    def reusable(self, path: str, st: os.stat_result) -> dict[str, Any] | None:
        """The parent's entry of the regular file at `path` (`st`: its lstat now) if the change rule
        lets the backup take it over unread, else None: a walk's `Reusable` (app/sources/files.py)."""
        previous = self.files.get(path)
        if previous is None or previous["type"] != "file":
            return None
        cutoff = self.started_ns - GRANULARITY_NS
        same = _same_file(previous, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, cutoff)
        return previous if same else None

    def needs_reading(self, entry: Entry) -> bool:
        if entry.parent_doc is not None:  # the walk applied the rule already
            return False
        return entry.type == "file" and not is_unchanged(entry, self.files.get(entry.path), self.started_ns)


def plan_reads(entries: list[Entry], parent: Parent | None) -> tuple[list[Entry], int]:
    """Fill reused files' chunks from the parent; return the files to read and the count reused. A file
    the walk found reusable (`parent_doc`, from `parent.reusable`) is not checked again."""
    to_read: list[Entry] = []
    reused = 0
    for entry in entries:
        if entry.type != "file":
            continue
        previous = entry.parent_doc
        if previous is None and parent is not None:
            previous = parent.files.get(entry.path)
            if not is_unchanged(entry, previous, parent.started_ns):
                previous = None
        if previous is not None:
            entry.chunks = list(previous["chunks"])
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


def items_of(entry: Entry, piece_bytes: int | None = None) -> list[Item]:
    """The work items of one file: itself, or its pieces when bigger than `piece_bytes` (PIECE_BYTES)."""
    piece_bytes = piece_bytes or PIECE_BYTES
    if entry.size <= piece_bytes:
        return [Item(entry)]
    offsets = range(0, entry.size, piece_bytes)
    last = offsets[-1]
    return [Item(entry, o, None if o == last else piece_bytes, is_piece=True) for o in offsets]


#: Cost of one item beyond its bytes, in bytes (open, stat, close, a chunk of its own, an entry in the
#: unit's result): in bench/cluster_bench.py a unit of 5 KiB files took about 100 us more per file than
#: big files of the same bytes, what reading ~16 KiB of a big file takes.
ITEM_COST_BYTES = 16 << 10
#: In a cluster, how fast unit sizes shrink toward the end of a backup: each unit is at most the cost
#: left to plan divided by this, so the last units to run are small and no worker waits long for the
#: last one (guided self-scheduling; units are sent biggest first).
GUIDED_DIVISOR = 4
#: The smallest unit a guided plan cuts (in cost): a unit's fixed cost in a cluster (broker, claim, done,
#: about 20 ms) stays under a fifth of its time, and the last one still takes a fraction of a second.
GUIDED_MIN_BYTES = 16 << 20
#: Items this big go first in a guided plan (a stable sort: path order otherwise).
BIG_ITEM_BYTES = 8 << 20


def split_units(
    files: list[Entry], unit_bytes: int, piece_bytes: int | None = None, *, guided: bool = False
) -> list[Unit]:
    """Group the files' items in order into units of about `unit_bytes`; a bigger item is a unit of its
    own. `guided`: units shrink as the plan nears its end (to `GUIDED_MIN_BYTES` of cost, never below
    what is left), and the units are numbered biggest first, the order a cluster runs them in."""
    pieces_from = piece_bytes or PIECE_BYTES
    items: list[Item] = []
    sizes: list[int] = []
    for entry in files:  # a file is one item unless it is big (the plan's hot loop: no call per file)
        if entry.size <= pieces_from:
            items.append(Item(entry))
            sizes.append(max(0, entry.size))
        else:
            for item in items_of(entry, pieces_from):
                items.append(item)
                sizes.append(item.size)
    if guided:  # big items first, a stable partition: the plan ends with small ones, that split finely
        big = [i for i, size in enumerate(sizes) if size >= BIG_ITEM_BYTES]
        if big:
            order = big + [i for i, size in enumerate(sizes) if size < BIG_ITEM_BYTES]
            items, sizes = [items[i] for i in order], [sizes[i] for i in order]
    weights = [size + ITEM_COST_BYTES for size in sizes] if guided else sizes
    left = sum(weights)
    units: list[Unit] = []
    current = Unit(0)

    def target() -> int:
        if not guided:
            return unit_bytes
        return min(unit_bytes, max(GUIDED_MIN_BYTES, left // GUIDED_DIVISOR))

    limit = target()
    for item, size, weight in zip(items, sizes, weights, strict=True):
        if current.items and current.cost + weight > limit:
            units.append(current)
            current = Unit(len(units))
            limit = target()
        current.items.append(item)
        current.bytes += size
        current.cost += weight
        left -= weight
    if current.items:
        units.append(current)
    if guided:
        units.sort(key=lambda u: -u.cost)
        for number, unit in enumerate(units):
            unit.number = number
    return units
