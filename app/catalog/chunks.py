"""The chunk and pack index: which pack holds each chunk. Rebuildable from the packs' own indexes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app import clock
from app.catalog.models import Chunk, Pack
from app.repo.pack import PackEntry

_BATCH = 2000


@dataclass(frozen=True)
class ChunkLocation:
    pack_id: str
    offset: int
    length: int
    raw_length: int


def _insert_ignoring_duplicates(session: Session, table: Any) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING, so a redelivered unit records once."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def known_chunk_ids(session: Session) -> set[str]:
    """Every indexed chunk id. Plain SQL: the ORM costs about 10 us a row, and the index is large."""
    rows = session.connection().exec_driver_sql(f"SELECT id FROM {Chunk.__tablename__}")
    return {row[0] for row in rows}


def record_pack(
    session: Session, pack_id: str, size: int, entries: Sequence[PackEntry], backup_id: str | None
) -> None:
    """Index a durable pack and its chunks; a chunk already indexed elsewhere keeps its first pack."""
    session.execute(
        _insert_ignoring_duplicates(session, Pack),
        [
            {
                "id": pack_id,
                "size": size,
                "chunk_count": len(entries),
                "backup_id": backup_id,
                "created_at": clock.now(),
            }
        ],
    )
    rows = [
        {
            "id": e.chunk_id,
            "pack_id": pack_id,
            "offset": e.offset,
            "length": e.length,
            "raw_length": e.raw_length,
        }
        for e in entries
    ]
    stmt = _insert_ignoring_duplicates(session, Chunk)
    for start in range(0, len(rows), _BATCH):
        session.execute(stmt, rows[start : start + _BATCH])


def locate(session: Session, chunk_ids: Iterable[str]) -> dict[str, ChunkLocation]:
    """Where each chunk is; ids the index does not know are absent from the result."""
    wanted = list(dict.fromkeys(chunk_ids))
    found: dict[str, ChunkLocation] = {}
    for start in range(0, len(wanted), _BATCH):
        batch = wanted[start : start + _BATCH]
        for row in session.execute(
            select(Chunk.id, Chunk.pack_id, Chunk.offset, Chunk.length, Chunk.raw_length).where(
                Chunk.id.in_(batch)
            )
        ):
            found[row.id] = ChunkLocation(row.pack_id, row.offset, row.length, row.raw_length)
    return found


def pack_ids(session: Session) -> set[str]:
    return set(session.scalars(select(Pack.id)))


def stored_bytes(session: Session) -> int:
    from sqlalchemy import func

    return int(session.scalar(select(func.coalesce(func.sum(Pack.size), 0))) or 0)
