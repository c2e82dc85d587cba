"""A fresh cluster worker process prepares its catalog work before its first unit (workers/base.py:
warm_up -> app/backup/unit.py: prepare_process): the statements run against no unit and change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from app.backup.finalize import finalize_backup
from app.backup.prepare import prepare_backup
from app.backup.unit import prepare_process, run_unit
from app.catalog.models import BackupUnit, Job
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
    with ctx.sessions() as session:
        progress = session.scalar(select(Job.progress).where(Job.backup_id == prepared.backup_id))
    assert progress["units_done"] == len(prepared.units)
    result = finalize_backup(ctx, prepared.backup_id)
    assert result.state == "complete"
    system.restore(result.id, tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")
