"""Point-in-time recovery planning holds the WAL a recovery from the chosen base backup can use, not the
whole archive (issue #14; DESIGN invariant 11): tracemalloc's peak over `plan_recovery` is the same with
500 and with 5,000 segments archived before the base backup, and the plan is the same."""

from __future__ import annotations

import tracemalloc
from datetime import timedelta

from sqlalchemy import insert

from app import clock
from app.catalog.db import transaction
from app.catalog.models import Backup, Source, WalArchive, WalSegment
from app.pitr.execute import plan_recovery
from app.pitr.target import LATEST, RecoveryTarget
from app.system import BackupSystem
from app.wal import lsn, names
from tests.support.system import Factory

SEGMENT = 16 << 20
#: The base backup starts at this segment number; the synthetic archive keeps segments below it.
BACKUP_SEGNO = 100_000
#: 4,500 more WAL rows loaded as ORM objects cost several MB here; the same plan's noise is tens of KB.
MARGIN_BYTES = 512 << 10


def _segments(source_id: int, segnos: range) -> list[dict[str, object]]:
    at = clock.now() - timedelta(days=1)
    return [
        {
            "source_id": source_id,
            "name": names.segment_name(1, segno, SEGMENT),
            "kind": names.SEGMENT,
            "timeline": 1,
            "segno": segno,
            "size": SEGMENT,
            "stored_size": SEGMENT // 4,
            "content_hash": "0" * 64,
            "key_id": "0" * 32,
            "written_at": at + timedelta(seconds=segno - BACKUP_SEGNO),
            "archived_at": at,
        }
        for segno in segnos
    ]


def _source_with_backup(system: BackupSystem, old_segments: int) -> int:
    """A PostgreSQL source with one base backup at BACKUP_SEGNO, `old_segments` archived before it
    and 4 from its start on."""
    now = clock.now()
    with transaction(system.context.sessions) as session:
        source = Source(name="pg", kind="postgres", path=None, options={}, created_at=now)
        session.add(source)
        session.flush()
        session.add(WalArchive(source_id=source.id, segment_size=SEGMENT))
        start = BACKUP_SEGNO * SEGMENT + 40
        session.add(
            Backup(
                id="b-pitr-scale",
                source_id=source.id,
                type="full",
                state="complete",
                host="h",
                started_at=now - timedelta(hours=2),
                finished_at=now - timedelta(hours=1),
                errors={},
                pg_start_lsn=lsn.format_lsn(start),
                pg_stop_lsn=lsn.format_lsn(start + 1000),
                pg_timeline=1,
                pg_started_at=now - timedelta(hours=2),
                pg_stopped_at=now - timedelta(hours=1),
            )
        )
        session.execute(insert(WalSegment), _segments(source.id, range(BACKUP_SEGNO, BACKUP_SEGNO + 4)))
        session.execute(
            insert(WalSegment), _segments(source.id, range(BACKUP_SEGNO - old_segments, BACKUP_SEGNO))
        )
        return source.id


def _plan_peak(system: BackupSystem) -> tuple[int, list[str]]:
    tracemalloc.start()
    try:
        plan = plan_recovery(system.context, "pg", RecoveryTarget(LATEST))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, plan.segments


def test_pitr_planning_memory_does_not_grow_with_older_wal(make_system: Factory) -> None:
    system = make_system()
    source_id = _source_with_backup(system, 500)
    _plan_peak(system)  # first use: imports and statement caches, outside the figure
    small, planned = _plan_peak(system)
    assert planned == [names.segment_name(1, BACKUP_SEGNO + i, SEGMENT) for i in range(4)]
    with transaction(system.context.sessions) as session:
        session.execute(
            insert(WalSegment), _segments(source_id, range(BACKUP_SEGNO - 5000, BACKUP_SEGNO - 500))
        )
    big, planned_big = _plan_peak(system)
    assert planned_big == planned
    assert big - small < MARGIN_BYTES, f"peak {small:,} B with 500 older segments, {big:,} B with 5,000"
