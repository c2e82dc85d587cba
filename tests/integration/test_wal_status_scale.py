"""`wal status` and the `wal` queue's archive check (every minute) read a row per run of archived
segments, counted by the database, not every WAL row of the source (issue #14; DESIGN invariant 11): the
same status as computed from every row, on SQLite and PostgreSQL, and tracemalloc's peak is the same
with 1,000 and with 10,000 segments archived."""

from __future__ import annotations

import tracemalloc
from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from app import clock
from app.catalog.db import transaction
from app.catalog.models import Source, WalArchive, WalSegment
from app.system import BackupSystem
from app.wal import names
from app.wal.status import compute_status, wal_status
from tests.support.system import Factory

SEGMENT = 16 << 20
#: 9,000 more WAL rows loaded as ORM objects cost ~16 MB here; the same status's noise is tens of KB.
MARGIN_BYTES = 512 << 10


def _row(source_id: int, name: str) -> dict[str, object]:
    wal = names.parse(name)
    at = clock.now() - timedelta(hours=1)
    return {
        "source_id": source_id,
        "name": name,
        "kind": wal.kind,
        "timeline": wal.timeline,
        "segno": wal.segno(SEGMENT),
        "size": SEGMENT,
        "stored_size": 1,
        "content_hash": "0" * 64,
        "key_id": "0" * 32,
        "written_at": at,
        "archived_at": at,
    }


def _source(system: BackupSystem) -> int:
    with transaction(system.context.sessions) as session:
        source = Source(name="pg", kind="postgres", path=None, options={}, created_at=clock.now())
        session.add(source)
        session.flush()
        session.add(
            WalArchive(
                source_id=source.id, segment_size=SEGMENT, newest_record_at=clock.now(), system_identifier="7"
            )
        )
        return source.id


def _add(system: BackupSystem, source_id: int, wal_names: list[str]) -> None:
    with transaction(system.context.sessions) as session:
        session.execute(insert(WalSegment), [_row(source_id, name) for name in wal_names])


def _segments(timeline: int, segnos: range) -> list[str]:
    return [names.segment_name(timeline, segno, SEGMENT) for segno in segnos]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_status_from_runs_equals_status_from_every_row(
    make_system: Factory, request: pytest.FixtureRequest, backend: str
) -> None:
    catalog = request.getfixturevalue("fresh_pg_url") if backend == "postgres" else None
    system = make_system(catalog=catalog)
    source_id = _source(system)
    wal_names = [
        *_segments(1, range(1, 40)),
        *_segments(1, range(41, 45)),  # a gap of one
        *_segments(1, range(300, 301)),  # a long gap, a run of one
        names.segment_name(1, 301, SEGMENT) + ".partial",
        "00000002.history",
        *_segments(2, range(302, 350)),
        names.segment_name(3, 402, SEGMENT) + ".partial",  # timeline 3: a partial segment only
        names.segment_name(2, 302, SEGMENT) + ".00000028.backup",
    ]
    _add(system, source_id, wal_names)
    (status,) = wal_status(system.context, "pg")
    with system.context.sessions() as session:
        rows = list(session.scalars(select(WalSegment).where(WalSegment.source_id == source_id)))
        archive = session.get(WalArchive, source_id)
        expected = compute_status("pg", archive, rows, now=clock.now(), since=None, max_data_loss_seconds=300)
    assert [t.timeline for t in status.timelines] == [1, 2, 3]
    one = status.timelines[0]
    assert [r.segments for r in one.ranges] == [39, 4, 1] and [g.segments for g in one.gaps] == [1, 255]
    assert status.timelines == expected.timelines
    assert status.history == expected.history == ["00000002.history"]
    assert status.backup_labels == expected.backup_labels and len(status.backup_labels) == 1


def _status_peak(system: BackupSystem) -> int:
    tracemalloc.start()
    try:
        (status,) = wal_status(system.context, "pg")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status.gap_count == 1
    return peak


def test_status_memory_does_not_grow_with_the_archive(make_system: Factory) -> None:
    system = make_system()
    source_id = _source(system)
    _add(system, source_id, _segments(1, range(1, 501)) + _segments(1, range(502, 1002)))
    _status_peak(system)  # first use: imports and statement caches, outside the figure
    small = _status_peak(system)
    _add(system, source_id, _segments(1, range(1002, 10_002)))
    big = _status_peak(system)
    assert big - small < MARGIN_BYTES, f"peak {small:,} B with 1,000 segments, {big:,} B with 10,000"
