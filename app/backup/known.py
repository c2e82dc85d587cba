"""The chunk ids a backup's writers may skip, loaded from the catalog once per process and backup.

Every unit of one backup that runs in this process (a Celery worker's, or a local pool's) starts from
the same set: the index as loaded for the backup's first unit here, plus every chunk a unit here has
stored since. A chunk another process stored meanwhile is missing from it and may be stored twice:
harmless (ids are content hashes; the index keeps the first copy), and cheaper than reloading the
index for every unit. The set is only extended by a unit whose packs are durable (its writer flushed):
a failed unit drops it, so no later unit can name a chunk that was claimed but never stored.
"""

from __future__ import annotations

import threading

from app.catalog import chunks
from app.context import Context

_lock = threading.Lock()
_cached: dict[str, set[str]] = {}


def known_for(ctx: Context, backup_id: str) -> set[str]:
    """The known ids for `backup_id`, shared: read it, never change it (`remember` does)."""
    with _lock:
        found = _cached.get(backup_id)
        if found is not None:
            return found
    with ctx.sessions() as session:
        loaded = chunks.known_chunk_ids(session)
    with _lock:
        _cached.clear()  # one backup at a time is kept: a worker moves on to the next backup
        _cached[backup_id] = loaded
        return loaded


def remember(backup_id: str, stored: set[str]) -> None:
    """A unit's writer flushed: its chunks are durable and indexed, later units may skip them."""
    with _lock:
        found = _cached.get(backup_id)
        if found is not None:
            found |= stored


def forget(backup_id: str | None = None) -> None:
    """Drop the cache (of one backup, or all): the next unit reloads the index."""
    with _lock:
        if backup_id is None:
            _cached.clear()
        else:
            _cached.pop(backup_id, None)
