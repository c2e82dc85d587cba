"""Faults against real Redis, PostgreSQL and worker processes: the broker restarted mid-backup, the
catalog unreachable for a moment, and beat started twice."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from app.catalog.models import Backup, BackupUnit, Pack, ScheduleClaim
from app.system import BackupSystem
from tests.support.cluster import ROOT, Cluster, RedisServer
from tests.support.pg import server_url
from tests.support.trees import assert_same_tree, flat_tree

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _wait_unit_running(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with BackupSystem() as system:
        while time.monotonic() < deadline:
            with system.context.sessions() as session:
                if session.scalar(select(func.count()).where(BackupUnit.state == "running")):
                    return
            time.sleep(0.05)
    raise AssertionError("no unit started")


def _every_indexed_pack_exists(system: BackupSystem) -> None:
    with system.context.sessions() as session:
        packs = list(session.scalars(select(Pack.id)))
    missing = [p for p in packs if system.context.storage.stat("packs", p) is None]
    assert missing == []


SLOW = {"BACKUP_UNIT_BYTES": str(4 << 20), "BACKUP_COMPRESSION_LEVEL": "15", "BACKUP_THREADS": "1"}


def test_redis_restarted_mid_backup(cluster: Cluster, redis_server: RedisServer, tmp_path: Path) -> None:
    from tasks.backup import run_backup

    src = flat_tree(tmp_path / "src", files=6, mib=4, text=True)
    cluster.start_worker("w1", extra_env=SLOW)
    with BackupSystem() as system:
        system.add_source("docs", src)
    os.environ.update(SLOW)
    try:
        first = run_backup.delay("docs", "full")
        _wait_unit_running()
        redis_server.stop()  # everything queued and the chord's state are gone: Redis keeps nothing
        time.sleep(1)
        redis_server.start()
        # Units already running finish; what was queued is lost, so the backup can never finalize.
        deadline = time.monotonic() + 90
        with BackupSystem(actor="test") as system:
            while time.monotonic() < deadline:
                with system.context.sessions() as session:
                    if not session.scalar(select(func.count()).where(BackupUnit.state == "running")):
                        break
                time.sleep(0.2)
        os.environ["JOB_STALE_SECONDS"] = "1"
        time.sleep(2)
        from app.scheduler import BackupScheduler
        from app.timespec import parse_since

        with BackupScheduler() as scheduler:
            reaped = scheduler.reap()
        os.environ.pop("JOB_STALE_SECONDS")
        with BackupSystem() as system:
            states = [b["state"] for b in system.list_backups("docs")]
            status = {
                r["job_id"]: r for r in BackupScheduler(context=system.context).job_status(parse_since("1h"))
            }
        assert states == ["failed"] and len(reaped) == 1, cluster.logs()
        assert status[reaped[0]]["state"] == "failed" and "worker lost" in status[reaped[0]]["error"]
        del first
        second = run_backup.delay("docs", "full").get(timeout=180)
    finally:
        for key in SLOW:
            os.environ.pop(key, None)
    assert second["state"] == "complete", cluster.logs()
    with BackupSystem() as system:
        _every_indexed_pack_exists(system)
        system.restore(second["backup_id"], tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")


def test_catalog_unreachable_for_a_moment(cluster: Cluster, tmp_path: Path) -> None:
    from tasks.backup import run_backup

    src = flat_tree(tmp_path / "src", files=6, mib=4, text=True)
    cluster.start_worker("w1", extra_env=SLOW)
    with BackupSystem() as system:
        system.add_source("docs", src)
    database = cluster.env["DATABASE_URL"].rsplit("/", 1)[1]
    admin = create_engine(server_url(), isolation_level="AUTOCOMMIT")
    os.environ.update(SLOW)
    try:
        pending = run_backup.delay("docs", "full")
        _wait_unit_running()
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": database},
            )
        time.sleep(3)
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
        outcome = pending.get(timeout=240)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
        admin.dispose()
        for key in SLOW:
            os.environ.pop(key, None)
    assert outcome["state"] == "complete", cluster.logs()
    assert "Retry in" in cluster.logs() or "OperationalError" in cluster.logs()
    with BackupSystem() as system:
        _every_indexed_pack_exists(system)
        system.restore(outcome["backup_id"], tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")


def test_beat_started_twice_runs_each_tick_once(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    with BackupSystem() as system:
        system.add_source("docs", src)
    every_minute = {"BACKUP_SCHEDULE_INCREMENTAL": "* * * * *"}
    cluster.start_worker("w1", extra_env=every_minute)
    beats = []
    for name in ("beat1", "beat2"):
        with open(cluster.logdir / f"{name}.log", "wb") as log:
            beats.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "workers",
                        "beat",
                        "--loglevel=INFO",
                        "-s",
                        str(tmp_path / f"{name}-schedule"),
                    ],
                    env={**cluster.env, **every_minute},
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        deadline = time.monotonic() + 30
        while not all(
            b"beat: Starting" in (cluster.logdir / f"{n}.log").read_bytes() for n in ("beat1", "beat2")
        ):
            assert time.monotonic() < deadline, cluster.logs()
            time.sleep(0.1)
        to_boundary = 60 - time.time() % 60
        if to_boundary < 3:  # too close to be sure both beats are past their first schedule read
            to_boundary += 60
        time.sleep(to_boundary + 20)  # the minute boundary, then time for the backup to run
    finally:
        for proc in beats:
            proc.terminate()
            proc.wait(20)
    logs = [(cluster.logdir / f"{n}.log").read_text() for n in ("beat1", "beat2")]
    assert all("Scheduler: Sending due task backup-incremental" in log for log in logs), cluster.logs()
    with BackupSystem() as system, system.context.sessions() as session:
        backups = list(session.scalars(select(Backup)))
        ticks = list(session.scalars(select(ScheduleClaim.key)))
    # One backup per firing, however many beats sent it (the wait may span two firings).
    assert ticks and all(t.startswith("backup:incremental:docs@") for t in ticks), ticks
    assert len(backups) == len(ticks), ([b.id for b in backups], ticks, cluster.logs())
    assert all(b.state == "complete" for b in backups)
