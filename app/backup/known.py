"""Which chunks a backup's writers may skip: asked of the catalog in batches, never loaded whole.

A writer asks `KnownChunks.present(ids)` about the chunks it has just cut (a small file's, a batch's);
the ids are looked up on the chunk index's primary key, so a lookup costs what it asks, whatever the
repository holds. The answers that a chunk is present are kept in a bounded LRU (`CACHE_IDS` ids, a few
MiB), with the ids of every pack this process stored and indexed since (`remember`): content met twice
(a file copied, a unit redelivered) is answered without asking again. An id leaves the cache only to
be asked about again; the cache never holds an id the index did not hold, so a false "known" (a chunk
skipped that is not durable) cannot come from it. A chunk another process stored after the lookup
may be stored twice: harmless (ids are content hashes; the index keeps the first copy).

One `KnownChunks` per backup is shared by the units of this process; `forget` empties it (a pack
check found a pack lost: its chunks left the index, and no cached answer may name them).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

from app.catalog import chunks
from app.context import Context
from app.repo.format import Tier

#: Ids kept as known; ~200 bytes each in CPython (the string and its LRU entry): ~13 MiB at most.
CACHE_IDS = 1 << 16

#: Which of the given ids the chunk index holds (app/catalog/chunks.py `present_chunk_ids`).
Lookup = Callable[[list[str]], set[str]]


class KnownChunks:
    """Thread-safe: `present` asks the index about the ids the cache does not hold."""

    def __init__(self, lookup: Lookup, capacity: int = CACHE_IDS) -> None:
        self._lookup = lookup
        self._capacity = capacity
        self._cache: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.lookups = 0  # statements' worth of asking, for tests and benchmarks

    def present(self, chunk_ids: Iterable[str]) -> set[str]:
        """The ids of `chunk_ids` that are indexed (so durable in storage); the others are not, or
        were not when asked."""
        found: set[str] = set()
        unsure: list[str] = []
        with self._lock:
            for chunk_id in chunk_ids:
                if chunk_id in self._cache:
                    self._cache.move_to_end(chunk_id)
                    found.add(chunk_id)
                else:
                    unsure.append(chunk_id)
        if unsure:
            indexed = self._lookup(unsure)
            with self._lock:
                self.lookups += 1
            self.remember(indexed)
            found |= indexed
        return found

    def holds(self, chunk_id: str) -> bool:
        """Whether the cache answers `chunk_id` as indexed, without asking the catalog."""
        with self._lock:
            return chunk_id in self._cache

    def remember(self, chunk_ids: Iterable[str]) -> None:
        """`chunk_ids` are indexed (a pack of them is durable and recorded, or the index said so)."""
        with self._lock:
            for chunk_id in chunk_ids:
                self._cache[chunk_id] = None
                self._cache.move_to_end(chunk_id)
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)


_lock = threading.Lock()
_cached: dict[str, KnownChunks] = {}


def catalog_lookup(ctx: Context, tier: str = Tier.STANDARD) -> Lookup:
    """Ask the catalog's chunk index about copies of `tier`, on a pooled connection held only for the
    statement (returned to the pool with a rollback, so no snapshot outlives the lookup)."""
    engine = ctx.engine

    def lookup(chunk_ids: list[str]) -> set[str]:
        connection = engine.raw_connection()
        try:
            return chunks.present_in(connection, engine.dialect.name, chunk_ids, tier)
        finally:
            connection.close()

    return lookup


def known_for(ctx: Context, backup_id: str, tier: str = Tier.STANDARD) -> KnownChunks:
    """The known chunks for `backup_id` (whose file chunks are of `tier`), shared by the units of this
    process."""
    with _lock:
        found = _cached.get(backup_id)
        if found is None:
            for old in _cached.values():
                old.clear()
            _cached.clear()  # one backup at a time is kept: a worker moves on to the next backup
            found = _cached[backup_id] = KnownChunks(catalog_lookup(ctx, tier))
        return found


def forget(backup_id: str | None = None) -> None:
    """Empty the cache (of one backup, or all): later answers come from the index again."""
    with _lock:
        dropped = list(_cached.values()) if backup_id is None else [_cached.get(backup_id)]
        for known in dropped:
            if known is not None:
                known.clear()
