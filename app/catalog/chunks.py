"""The chunk and pack index: which pack holds each chunk. Rebuildable from the packs' own indexes."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, Insert, select
from sqlalchemy.orm import Session

from app import clock
from app.catalog.models import Chunk, Pack
from app.repo.format import Tier
from app.repo.pack import PackEntry

_BATCH = 2000


class ChunkLocation(NamedTuple):
    """Where a chunk's copy is: a tuple, as a restore builds and hands its processes one per chunk
    (about 32 a MiB of a PostgreSQL relation file)."""

    pack_id: str
    offset: int
    length: int
    raw_length: int


def _insert_ignoring_duplicates(session: Session, table: Any) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING, so a redelivered unit records once."""
    # imported here: a backup process loads only its own catalog's dialect (app/catalog/wal.py)
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table).on_conflict_do_nothing()


#: Ids per `present_chunk_ids` statement: under SQLite's oldest bound-parameter limit (999).
LOOKUP_BATCH = 900


def present_chunk_ids(
    connection: Connection, chunk_ids: Iterable[str], tier: str = Tier.STANDARD
) -> set[str]:
    """Which of `chunk_ids` the index holds a copy of in `tier`: one primary-key lookup per
    LOOKUP_BATCH ids, so the cost grows with the ids asked about, never with the index."""
    return present_in(connection.connection.dbapi_connection, connection.dialect.name, chunk_ids, tier)


def present_in(
    dbapi_connection: Any, dialect: str, chunk_ids: Iterable[str], tier: str = Tier.STANDARD
) -> set[str]:
    """`present_chunk_ids` on a DB-API connection: a dedup lookup runs for every batch a writer cuts,
    and SQLAlchemy's statement machinery cost more than the lookup itself (~0.3 ms against ~0.05 ms)."""
    wanted = list(dict.fromkeys(chunk_ids))
    found: set[str] = set()
    cursor = dbapi_connection.cursor()
    try:
        for start in range(0, len(wanted), LOOKUP_BATCH):
            batch = wanted[start : start + LOOKUP_BATCH]
            cursor.execute(_present_statement(dialect, len(batch)), (*batch, tier))
            found.update(row[0] for row in cursor.fetchall())
    finally:
        cursor.close()
    return found


@functools.lru_cache(maxsize=64)
def _present_statement(dialect: str, count: int) -> str:
    mark = "%s" if dialect == "postgresql" else "?"
    return f"SELECT id FROM {Chunk.__tablename__} WHERE id IN ({', '.join([mark] * count)}) AND tier = {mark}"


#: Ids per `packs_holding` statement on PostgreSQL: one array parameter (`= ANY(%s)`), which the server
#: plans in a fraction of an IN list's time (finalize of a 40,000-file backup: ~0.4 s against ~0.7 s).
PG_PACKS_BATCH = 5000


def packs_holding(
    connection: Connection, chunk_ids: Sequence[str], tier: str = Tier.STANDARD
) -> tuple[set[str], int]:
    """The distinct packs of `tier` holding `chunk_ids` and how many of the ids the index holds a copy
    of in that tier: one grouped
    query per batch (a row per pack, not per chunk), on the DB-API connection: SQLAlchemy spent more
    time binding a few thousand ids than the statement took (finalize's pack check, on the serial path
    of a cluster backup)."""
    postgres = connection.dialect.name == "postgresql"
    dbapi: Any = connection.connection.dbapi_connection
    cursor = dbapi.cursor()
    step = PG_PACKS_BATCH if postgres else LOOKUP_BATCH
    packs: set[str] = set()
    found = 0
    try:
        for start in range(0, len(chunk_ids), step):
            batch = list(chunk_ids[start : start + step])
            if postgres:
                cursor.execute(*_pg_packs_query(batch, tier))
            else:
                cursor.execute(_sqlite_packs_statement(len(batch)), (*batch, tier))
            for pack_id, count in cursor.fetchall():
                packs.add(pack_id)
                found += int(count)
    finally:
        cursor.close()
    return packs, found


_PG_PACKS = f"SELECT pack_id, count(*) FROM {Chunk.__tablename__} WHERE id = ANY(%s) AND tier = %s GROUP BY pack_id"
_PG_PACKS_JOINED = (
    f"SELECT pack_id, count(*) FROM {Chunk.__tablename__} "
    "WHERE id = ANY(string_to_array(%s, ',')) AND tier = %s GROUP BY pack_id"
)


def _pg_packs_query(batch: list[str], tier: str) -> tuple[str, tuple[Any, ...]]:
    """`packs_holding`'s statement for one batch on PostgreSQL. The ids go as one comma-joined string
    that the server splits (`string_to_array`, the same index scan): psycopg's array dumper spent
    ~5 us of Python an id (0.2 of finalize's ~0.9 CPU s on the 1 GB bench tree, serial in a cluster),
    the join a fraction of that. An id holding a comma, or one empty id (never a chunk id: hex),
    goes as an array."""
    joined = ",".join(batch)
    if joined and joined.count(",") == len(batch) - 1:
        return _PG_PACKS_JOINED, (joined, tier)
    return _PG_PACKS, (batch, tier)


@functools.lru_cache(maxsize=64)
def _sqlite_packs_statement(count: int) -> str:
    marks = ", ".join("?" * count)
    return f"SELECT pack_id, count(*) FROM {Chunk.__tablename__} WHERE id IN ({marks}) AND tier = ? GROUP BY pack_id"


def record_pack(
    session: Session,
    pack_id: str,
    size: int,
    entries: Sequence[PackEntry],
    backup_id: str | None,
    tier: str = Tier.STANDARD,
) -> None:
    """Index a durable pack of `tier` and its chunks; a chunk already indexed in that tier keeps its
    first pack."""
    record_packs(session, [(pack_id, size, entries)], backup_id, tier)


def record_packs(
    session: Session,
    packs: Sequence[tuple[str, int, Sequence[PackEntry]]],
    backup_id: str | None,
    tier: str = Tier.STANDARD,
) -> None:
    """`record_pack` of several packs of one tier in one insert of pack rows and one per _BATCH chunk
    rows: a catalog rebuild indexes packs by the thousand, and two statements a pack cost more than the
    rows."""
    if not packs:
        return
    now = clock.now()
    session.execute(
        _insert_ignoring_duplicates(session, Pack),
        [
            {
                "id": pack_id,
                "size": size,
                "chunk_count": len(entries),
                "backup_id": backup_id,
                "created_at": now,
                "tier": tier,
            }
            for pack_id, size, entries in packs
        ],
    )
    # The chunk rows on the DB-API cursor of the session's connection (same transaction): SQLAlchemy's
    # bulk insert spent ~15 us of Python a row building and binding parameters, and a PostgreSQL
    # base backup records 32 rows a MiB.
    rows = [
        (e.chunk_id, pack_id, e.offset, e.length, e.raw_length, tier)
        for pack_id, _size, entries in packs
        for e in entries
    ]
    connection = session.connection()
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    statement = _PG_INSERT_CHUNKS if connection.dialect.name == "postgresql" else _SQLITE_INSERT_CHUNKS
    try:
        for start in range(0, len(rows), _BATCH):
            cursor.executemany(statement, rows[start : start + _BATCH])
    finally:
        cursor.close()


_CHUNK_COLUMNS = f'{Chunk.__tablename__} (id, pack_id, "offset", length, raw_length, tier)'
_PG_INSERT_CHUNKS = f"INSERT INTO {_CHUNK_COLUMNS} VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
_SQLITE_INSERT_CHUNKS = f"INSERT INTO {_CHUNK_COLUMNS} VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"


def locate(
    session: Session, chunk_ids: Iterable[str], tier: str = Tier.STANDARD
) -> dict[str, ChunkLocation]:
    """Where each chunk's copy of `tier` is; ids the index holds no such copy of are absent. On the
    DB-API connection, LOOKUP_BATCH ids a statement: SQLAlchemy's binding and row objects cost more
    than the statements (a restore of a 1 GB PostgreSQL cluster locates ~32,000 chunks)."""
    wanted = list(dict.fromkeys(chunk_ids))
    found: dict[str, ChunkLocation] = {}
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    make = ChunkLocation._make
    try:
        for start in range(0, len(wanted), PG_PACKS_BATCH if postgres else LOOKUP_BATCH):
            batch = wanted[start : start + (PG_PACKS_BATCH if postgres else LOOKUP_BATCH)]
            if postgres:
                cursor.execute(_PG_LOCATE, (batch, tier))
            else:
                cursor.execute(_sqlite_locate_statement(len(batch)), (*batch, tier))
            for row in cursor.fetchall():
                found[row[0]] = make(row[1:])
    finally:
        cursor.close()
    return found


_LOCATED = f'id, pack_id, "offset", length, raw_length FROM {Chunk.__tablename__}'
_PG_LOCATE = f"SELECT {_LOCATED} WHERE id = ANY(%s) AND tier = %s"


@functools.lru_cache(maxsize=64)
def _sqlite_locate_statement(count: int) -> str:
    return f"SELECT {_LOCATED} WHERE id IN ({', '.join('?' * count)}) AND tier = ?"


def stored_bytes(session: Session) -> int:
    from sqlalchemy import func

    return int(session.scalar(select(func.coalesce(func.sum(Pack.size), 0))) or 0)
