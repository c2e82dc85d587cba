"""The WAL index (docs/WAL.md section 7): one row per archived WAL file, written after its object is
durable, and per source the newest end of its archive, from which the achieved RPO is computed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Insert, func, select
from sqlalchemy.orm import Session

from app import clock
from app.catalog.models import WalArchive, WalSegment
from app.errors import WalConflictError
from app.wal import names


@dataclass(frozen=True)
class WalRecord:
    """What a push records for one durable WAL object."""

    name: str
    kind: str
    timeline: int
    segno: int | None
    size: int
    stored_size: int
    content_hash: str
    key_id: str
    written_at: datetime | None
    archived_at: datetime
    system_identifier: str | None
    segment_size: int | None


def _insert_ignoring_duplicates(session: Session, table: Any) -> Insert:
    # imported here: a `wal push` process loads only its own catalog's dialect
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table).on_conflict_do_nothing()


def get_archive(session: Session, source_id: int) -> WalArchive | None:
    return session.get(WalArchive, source_id)


def get_segment(session: Session, source_id: int, name: str) -> WalSegment | None:
    return session.get(WalSegment, (source_id, name))


def list_segments(session: Session, source_id: int, since: datetime | None = None) -> list[WalSegment]:
    """The source's WAL rows (archived at or after `since`), by timeline then name."""
    query = select(WalSegment).where(WalSegment.source_id == source_id)
    if since is not None:
        query = query.where(WalSegment.archived_at >= since)
    return list(session.scalars(query.order_by(WalSegment.timeline, WalSegment.name)))


def segments_from(session: Session, source_id: int, first_segno: int) -> list[Any]:
    """The source's WAL segment rows from segment number `first_segno` on (every timeline), by timeline
    then name, as rows of the columns recovery planning reads (name, timeline, segno, size, stored_size,
    written_at): what a recovery from a base backup starting there can use, not the whole archive."""
    query = (
        select(
            WalSegment.name,
            WalSegment.timeline,
            WalSegment.segno,
            WalSegment.size,
            WalSegment.stored_size,
            WalSegment.written_at,
        )
        .where(
            WalSegment.source_id == source_id,
            WalSegment.kind == names.SEGMENT,
            WalSegment.segno.is_not(None),
            WalSegment.segno >= first_segno,
        )
        .order_by(WalSegment.timeline, WalSegment.name)
    )
    return list(session.execute(query).all())


def segment_runs(
    session: Session, source_id: int, since: datetime | None = None
) -> list[tuple[int, int, int]]:
    """(timeline, first, last) of every run of consecutive archived segment numbers of the source
    (archived at or after `since`), by timeline then first: counted by the database (a run is where
    `segno - row_number()` stays the same), so a status costs a row per run, not per segment."""
    where = [
        WalSegment.source_id == source_id,
        WalSegment.kind == names.SEGMENT,
        WalSegment.segno.is_not(None),
    ]
    if since is not None:
        where.append(WalSegment.archived_at >= since)
    step = func.row_number().over(partition_by=WalSegment.timeline, order_by=WalSegment.segno)
    numbered = select(WalSegment.timeline, WalSegment.segno, (WalSegment.segno - step).label("run")).where(
        *where
    )
    inner = numbered.subquery()
    first = func.min(inner.c.segno)
    query = (
        select(inner.c.timeline, first, func.max(inner.c.segno))
        .group_by(inner.c.timeline, inner.c.run)
        .order_by(inner.c.timeline, first)
    )
    return [(int(t), int(a), int(b)) for t, a, b in session.execute(query)]


def other_files(
    session: Session, source_id: int, since: datetime | None = None
) -> list[tuple[str, str, int]]:
    """(name, kind, timeline) of the source's WAL files that are not segments: partial segments, timeline
    histories, backup history files (archived at or after `since`)."""
    query = select(WalSegment.name, WalSegment.kind, WalSegment.timeline).where(
        WalSegment.source_id == source_id, WalSegment.kind != names.SEGMENT
    )
    if since is not None:
        query = query.where(WalSegment.archived_at >= since)
    return [(str(n), str(k), int(t)) for n, k, t in session.execute(query.order_by(WalSegment.name))]


def history_names(session: Session, source_id: int) -> list[tuple[str, int]]:
    """(name, timeline) of the source's archived timeline history files."""
    query = select(WalSegment.name, WalSegment.timeline).where(
        WalSegment.source_id == source_id, WalSegment.kind == names.HISTORY
    )
    return [(row.name, row.timeline) for row in session.execute(query.order_by(WalSegment.timeline))]


def record_segment(session: Session, source_id: int, record: WalRecord) -> WalSegment:
    """Insert the row for a durable object and advance the source's archive, in the caller's transaction.

    If the row exists already (a concurrent push of the same name), it is kept; WalConflictError if its
    content hash differs from `record`'s.
    """
    session.execute(
        _insert_ignoring_duplicates(session, WalSegment),
        [
            {
                "source_id": source_id,
                "name": record.name,
                "kind": record.kind,
                "timeline": record.timeline,
                "segno": record.segno,
                "size": record.size,
                "stored_size": record.stored_size,
                "content_hash": record.content_hash,
                "key_id": record.key_id,
                "written_at": record.written_at,
                "archived_at": record.archived_at,
            }
        ],
    )
    row = get_segment(session, source_id, record.name)
    assert row is not None
    if row.content_hash != record.content_hash:
        raise WalConflictError(
            f"WAL file {record.name} was archived concurrently with different content",
            detail=f"recorded content hash {row.content_hash[:16]}…, this file {record.content_hash[:16]}…",
            hint="two clusters are archiving into one source: give each its own source",
        )
    _advance_archive(session, source_id, record)
    return row


def _advance_archive(session: Session, source_id: int, record: WalRecord) -> None:
    session.execute(_insert_ignoring_duplicates(session, WalArchive), [{"source_id": source_id}])
    archive = session.scalars(
        select(WalArchive).where(WalArchive.source_id == source_id).with_for_update()
    ).one()
    if archive.system_identifier is None and record.system_identifier is not None:
        archive.system_identifier = record.system_identifier
    if archive.segment_size is None and record.segment_size is not None:
        archive.segment_size = record.segment_size
    if archive.last_archived_at is None or clock.as_utc(archive.last_archived_at) < record.archived_at:
        archive.last_archived_at = record.archived_at
    if record.kind != names.SEGMENT or record.segno is None:
        return
    if archive.newest_segment is None or _position(archive.newest_segment, archive.segment_size) <= (
        record.timeline,
        record.segno,
    ):
        archive.newest_segment = record.name
        archive.newest_record_at = record.written_at or record.archived_at


def _position(segment: str, segment_size: int | None) -> tuple[int, int]:
    name = names.parse(segment)
    return name.timeline, name.segno(segment_size or names.MIN_SEGMENT_SIZE) or 0
