"""A fresh cluster worker process prepares its catalog work before its first unit (workers/base.py:
warm_up -> app/backup/unit.py: prepare_process): the statements run against no unit and change nothing."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from app import clock
from app.backup.finalize import finalize_backup
from app.backup.prepare import CLUSTER_LEASE, lease_name, prepare_backup
from app.backup.unit import CLAIM_BEAT_AFTER, prepare_process, run_unit
from app.catalog.models import BackupUnit, Job, Lock
from app.scheduler import BackupScheduler
from tests.support.system import Factory
from tests.support.trees import assert_same_tree, make_tree


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_prepare_process_changes_nothing_and_units_run_after_it(
    backend: str, make_system: Factory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    catalog = request.getfixturevalue("fresh_pg_url") if backend == "postgres" else None
    system = make_system(catalog=catalog, backup_unit_bytes=1 << 20)
    src = make_tree(tmp_path / "src", big_mib=2, small=20)
    system.add_source("docs", src)
    ctx = system.context
    prepared = prepare_backup(ctx, "docs", "full", cluster=True)
    assert len(prepared.units) >= 2

    def snapshot() -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        with ctx.sessions() as session:
            units = session.execute(
                select(BackupUnit.number, BackupUnit.state, BackupUnit.attempts, BackupUnit.worker)
                .where(BackupUnit.backup_id == prepared.backup_id)
                .order_by(BackupUnit.number)
            ).all()
            job = session.execute(select(Job.id, Job.state, Job.progress, Job.heartbeat_at)).all()
        return [tuple(u) for u in units], [tuple(j) for j in job]

    before = snapshot()
    prepare_process(ctx)
    prepare_process(ctx)  # as often as processes start
    assert snapshot() == before
    assert all(state == "pending" and attempts == 0 for _n, state, attempts, _w in before[0])

    for number in prepared.units:
        run_unit(ctx, prepared.backup_id, number, cluster=True)
    [status] = BackupScheduler(context=ctx).job_status(clock.now() - timedelta(hours=1))
    assert status["state"] == "running" and status["progress"]["units_done"] == len(prepared.units)
    assert status["progress"]["bytes_done"] == status["progress"]["bytes_total"]
    result = finalize_backup(ctx, prepared.backup_id)
    assert result.state == "complete"
    system.restore(result.id, tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_claim_renews_the_source_lease_only_when_it_was_not_renewed_lately(
    backend: str, make_system: Factory, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A unit's claim skips the lease's renewal while the lease is fresh (two writes fewer per unit,
    docs/CLUSTER.md), and renews it whenever it was last renewed more than CLAIM_BEAT_AFTER ago: the
    lease of a backup whose units keep coming never runs down."""
    catalog = request.getfixturevalue("fresh_pg_url") if backend == "postgres" else None
    system = make_system(catalog=catalog, backup_unit_bytes=1 << 20)
    src = make_tree(tmp_path / "src", big_mib=3, small=20)
    system.add_source("docs", src)
    ctx = system.context
    prepared = prepare_backup(ctx, "docs", "full", cluster=True)
    first, second, *rest = prepared.units
    lease = Lock.name == lease_name("docs")

    def set_expiry(at: datetime) -> None:
        with ctx.sessions() as session:
            session.execute(update(Lock).where(lease).values(expires_at=at))
            session.commit()

    def expiry() -> datetime:
        with ctx.sessions() as session:
            value = session.scalar(select(Lock.expires_at).where(lease))
        assert value is not None
        return clock.as_utc(value)

    soon = clock.now() + timedelta(minutes=1)  # renewed 29 minutes ago: due
    set_expiry(soon)
    run_unit(ctx, prepared.backup_id, first, cluster=True)
    assert expiry() > clock.now() + CLUSTER_LEASE - timedelta(minutes=1)

    fresh = clock.now() + CLUSTER_LEASE - CLAIM_BEAT_AFTER / 2  # renewed 15 s ago: not due
    set_expiry(fresh)
    run_unit(ctx, prepared.backup_id, second, cluster=True)
    assert abs((expiry() - fresh).total_seconds()) < 1

    for number in rest:
        run_unit(ctx, prepared.backup_id, number, cluster=True)
    assert finalize_backup(ctx, prepared.backup_id).state == "complete"
