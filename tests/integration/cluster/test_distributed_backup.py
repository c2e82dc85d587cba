"""One backup spread over real Celery worker processes on a real Redis, with a PostgreSQL catalog."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.catalog.models import BackupUnit, Chunk, Pack
from app.system import BackupSystem
from tests.support.cluster import ROOT, Cluster, unit_process
from tests.support.trees import assert_same_tree, flat_tree

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_one_backup_over_two_workers(cluster: Cluster, tmp_path: Path) -> None:
    from tasks.backup import run_backup

    src = flat_tree(tmp_path / "src", files=8, mib=2)
    unit_env = {"BACKUP_UNIT_BYTES": str(2 << 20)}
    cluster.start_worker("w1", extra_env=unit_env)
    cluster.start_worker("w2", extra_env=unit_env)
    with BackupSystem() as system:
        system.add_source("docs", src)
    os.environ["BACKUP_UNIT_BYTES"] = str(2 << 20)
    try:
        outcome = run_backup.delay("docs", "full").get(timeout=120)
    finally:
        os.environ.pop("BACKUP_UNIT_BYTES")
    assert outcome["state"] == "complete", cluster.logs()
    assert outcome["job_id"].startswith("j-")
    with BackupSystem() as system:
        shown = system.show_backup(outcome["backup_id"])
        units = shown["units"]
        assert len(units) == 8 and all(u["state"] == "done" and u["seconds"] is not None for u in units)
        workers = {u["worker"] for u in units}
        assert len(workers) >= 2, f"all units ran on {workers}"
        # each unit names its worker as Flower does: the Celery node name given with -n
        host = socket.gethostname()
        assert workers == {f"w1@{host}", f"w2@{host}"}, workers
        system.restore(outcome["backup_id"], tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")
    status = subprocess.run(
        [sys.executable, "-m", "app.cli.main", "backup", "status"],
        env={**cluster.env, "COLUMNS": "250"}, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert status.returncode == 0 and " 8/8 units" in status.stdout, status.stdout + status.stderr


def test_a_worker_killed_mid_unit_is_redelivered(cluster: Cluster, tmp_path: Path) -> None:
    from tasks.backup import run_backup

    src = flat_tree(tmp_path / "src", files=6, mib=6, text=True)
    slow = {"BACKUP_UNIT_BYTES": str(6 << 20), "BACKUP_COMPRESSION_LEVEL": "19", "BACKUP_THREADS": "1"}
    cluster.start_worker("w1", extra_env=slow)
    cluster.start_worker("w2", extra_env=slow)
    with BackupSystem() as system:
        system.add_source("docs", src)
    os.environ.update(slow)
    try:
        pending = run_backup.delay("docs", "full")
        killed = None
        deadline = time.monotonic() + 60
        with BackupSystem() as system:
            while killed is None and time.monotonic() < deadline:
                with system.context.sessions() as session:
                    running = session.scalars(select(BackupUnit).where(BackupUnit.state == "running")).first()
                if running is not None and running.worker:
                    child = unit_process(running.worker, running.backup_id, running.number)
                    os.kill(child, signal.SIGKILL)  # the pool child
                    killed = running.number
                time.sleep(0.05)
        assert killed is not None, "no unit was seen running"
        outcome = pending.get(timeout=180)
    finally:
        for key in slow:
            os.environ.pop(key, None)
    assert outcome["state"] == "complete", cluster.logs()
    with BackupSystem() as system:
        units = {u["unit"]: u for u in system.show_backup(outcome["backup_id"])["units"]}
        assert units[killed]["attempts"] >= 2 and units[killed]["state"] == "done"
        with system.context.sessions() as session:
            chunk_rows = session.scalar(select(func.count()).select_from(Chunk))
            distinct = session.scalar(select(func.count(func.distinct(Chunk.id))))
            pack_rows = session.scalar(select(func.count()).select_from(Pack))
            assert chunk_rows == distinct and pack_rows == session.scalar(
                select(func.count(func.distinct(Pack.id)))
            )
        system.restore(outcome["backup_id"], tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")


def test_a_source_on_its_own_queue_is_read_only_by_its_workers(cluster: Cluster, tmp_path: Path) -> None:
    from tasks.backup import run_backup

    src = flat_tree(tmp_path / "src", files=4, mib=1)
    small_units = {"BACKUP_UNIT_BYTES": str(1 << 20)}
    cluster.start_worker("planner", queues="backup,chunks", extra_env=small_units)  # a host without the files
    cluster.start_worker("nas1", queues="chunks.nas1")  # the host that has them
    with BackupSystem() as system:
        system.add_source("docs", src, queue="chunks.nas1")
    outcome = run_backup.delay("docs", "full").get(timeout=120)
    assert outcome["state"] == "complete", cluster.logs()
    nas_log = (cluster.logdir / "nas1.log").read_text()
    planner_log = (cluster.logdir / "planner.log").read_text()
    with BackupSystem() as system:
        assert len(system.show_backup(outcome["backup_id"])["units"]) == 4
    assert nas_log.count("Task tasks.backup.backup_unit[") >= 4
    assert "Task tasks.backup.backup_unit[" not in planner_log
    assert "tasks.backup.run_backup" in planner_log and "tasks.backup.finalize_backup" in planner_log
