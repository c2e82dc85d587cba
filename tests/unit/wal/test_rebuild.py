"""`catalog rebuild` gives the WAL index back from the WAL objects alone (docs/WAL.md section 7):
after the catalog's WAL rows are lost, the same rows, the same archive end, and `wal status` agrees."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from app import clock
from app.catalog.db import transaction
from app.catalog.models import Source, WalArchive, WalSegment
from app.catalog.rebuild import rebuild_catalog
from app.context import Context
from app.repo.format import Kind
from app.wal import names
from app.wal.push import push
from tests.unit.wal.conftest import SOURCE, WriteSegment


def wal_index(ctx: Context) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def plain(row: Any, fields: tuple[str, ...]) -> dict[str, Any]:
        values = {f: getattr(row, f) for f in fields}
        return {f: clock.iso(v) if hasattr(v, "tzinfo") else v for f, v in values.items()}

    segment_fields = ("name", "kind", "timeline", "segno", "size", "stored_size", "content_hash", "key_id")
    archive_fields = ("system_identifier", "segment_size", "newest_segment")
    with ctx.sessions() as session:
        segments = session.scalars(select(WalSegment).order_by(WalSegment.name)).all()
        archives = session.scalars(select(WalArchive)).all()
        return (
            [plain(r, (*segment_fields, "written_at", "archived_at")) for r in segments],
            [plain(a, (*archive_fields, "newest_record_at", "last_archived_at")) for a in archives],
        )


def test_rebuild_records_every_wal_object_as_its_push_did(ctx: Context, write_segment: WriteSegment) -> None:
    for segno in (1, 2, 3, 5):  # a gap at 4
        push(ctx, SOURCE, write_segment(segno))
    before = wal_index(ctx)
    assert len(before[0]) == 4 and before[1][0]["newest_segment"] == names.segment_name(1, 5, 1 << 20)

    with transaction(ctx.sessions) as session:  # the catalog's WAL index is lost
        session.execute(delete(WalSegment))
        session.execute(delete(WalArchive))
    assert wal_index(ctx) == ([], [])
    with transaction(ctx.sessions) as session:
        report = rebuild_catalog(session, ctx.repository)
    assert wal_index(ctx) == before
    assert report.wal_files == 4 and report.unreadable == []

    with transaction(ctx.sessions) as session:  # again: nothing is recorded twice
        assert rebuild_catalog(session, ctx.repository).wal_files == 0
    assert wal_index(ctx) == before


def test_a_source_known_only_from_its_wal_is_created_and_a_damaged_object_is_named(
    ctx: Context, write_segment: WriteSegment
) -> None:
    push(ctx, SOURCE, write_segment(1))
    push(ctx, SOURCE, write_segment(2))
    damaged = names.object_name(SOURCE, names.segment_name(1, 2, 1 << 20))
    blob = bytearray(ctx.storage.get(Kind.WAL, damaged))
    blob[-20] ^= 0xFF
    ctx.storage.put(Kind.WAL, damaged, bytes(blob))
    with transaction(ctx.sessions) as session:
        session.execute(delete(WalSegment))
        session.execute(delete(WalArchive))
        session.execute(delete(Source).where(Source.name == SOURCE))
    with transaction(ctx.sessions) as session:
        report = rebuild_catalog(session, ctx.repository)
    with ctx.sessions() as session:
        source = session.scalar(select(Source).where(Source.name == SOURCE))
        assert source is not None and source.kind == "postgres"
        assert session.scalars(select(WalSegment.name)).all() == [names.segment_name(1, 1, 1 << 20)]
    assert report.wal_files == 1 and report.sources_created == 1
    assert len(report.unreadable) == 1 and damaged in report.unreadable[0]
