"""What a restore's dry run checks of the data without reading it: every pack the restore needs is in
storage, at the size the catalog recorded (one stat per pack); a missing or resized pack is named with
the files it would have restored."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select

from app.catalog.chunks import ChunkLocation
from app.catalog.models import Pack
from app.context import Context
from app.errors import IntegrityError, ObjectNotFoundError
from app.repo.format import Kind

#: Files named in an error; the rest are counted.
_SHOWN = 5
_BATCH = 500


def check_packs(ctx: Context, entries: list[dict[str, Any]], where: dict[str, ChunkLocation]) -> None:
    """ObjectNotFoundError for a missing pack, IntegrityError for one whose size is not the catalog's
    (or too small for the blobs it should hold), each naming the files that need it."""
    files: dict[str, list[str]] = defaultdict(list)
    ends: dict[str, int] = defaultdict(int)
    for e in entries:
        if e["type"] != "file":
            continue
        for pack_id in dict.fromkeys(where[c].pack_id for c in e["chunks"]):
            files[pack_id].append(e["path"])
        for c in e["chunks"]:
            loc = where[c]
            ends[loc.pack_id] = max(ends[loc.pack_id], loc.offset + loc.length)
    ids = sorted(files)
    sizes: dict[str, int] = {}
    with ctx.sessions() as session:
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            sizes.update(session.execute(select(Pack.id, Pack.size).where(Pack.id.in_(batch))).all())
    storage = ctx.repository.storage
    for pack_id in ids:
        needed_by = _needed_by(files[pack_id])
        info = storage.stat(Kind.PACKS, pack_id)
        if info is None:
            raise ObjectNotFoundError(
                Kind.PACKS,
                pack_id,
                storage.location,
                detail=needed_by,
                hint="restore the pack from a replica (secondary region), then run the restore",
            )
        expected = sizes.get(pack_id)
        if (expected is not None and info.size != expected) or info.size < ends[pack_id]:
            wanted = (
                f"{expected} bytes as recorded" if expected is not None else f"{ends[pack_id]} bytes or more"
            )
            raise IntegrityError(
                f"pack {pack_id} is {info.size} bytes in storage, not {wanted}: it is damaged",
                detail=needed_by,
                hint="restore the pack from a replica (secondary region), then run the restore",
            )


def _needed_by(paths: list[str]) -> str:
    more = f" and {len(paths) - _SHOWN} more" if len(paths) > _SHOWN else ""
    return f"needed by {len(paths)} file(s): {', '.join(paths[:_SHOWN])}{more}"
