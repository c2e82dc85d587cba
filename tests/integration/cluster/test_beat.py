"""Beat and workers on real Redis and PostgreSQL: beat's message says which firing it serves, computed
from beat's rules (a worker with other settings serves that firing, not one of its own), every source
is backed up (files and PostgreSQL), and a run skipped because its source is locked says so in the log
and in `backup status`."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from app.catalog import locks
from app.catalog.models import Backup, Job, ScheduleClaim, Source
from app.system import BackupSystem
from tests.support.cluster import ROOT, Cluster
from tests.support.ports import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _start_beat(cluster: Cluster, tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(cluster.logdir / "beat.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "beat", "--loglevel=INFO",
             "-s", str(tmp_path / "beat-schedule")],
            env={**cluster.env, **env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def test_beat_names_the_tick_and_every_source_is_backed_up(cluster: Cluster, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    with BackupSystem() as system:
        system.add_source("docs", src)
        # a PostgreSQL source whose server is down: its run fails, but it must be started
        system.add_postgres_source("db", f"host=127.0.0.1 port={free_port()} user=postgres dbname=postgres")
    # Beat fires every minute; the worker keeps the default rules (every 6 hours).
    cluster.start_worker("w1")
    beat = _start_beat(cluster, tmp_path, {"BACKUP_SCHEDULE_INCREMENTAL": "* * * * *"})
    try:
        deadline = time.monotonic() + 30
        while b"beat: Starting" not in (cluster.logdir / "beat.log").read_bytes():
            assert time.monotonic() < deadline and beat.poll() is None, cluster.logs()
            time.sleep(0.1)
        now = datetime.now(UTC)
        firing = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        if (firing - now).total_seconds() < 3:  # too close: beat may have read its schedule after it
            firing += timedelta(minutes=1)
        time.sleep((firing - now).total_seconds() + 2)
        deadline = time.monotonic() + 60
        with BackupSystem() as system:
            while time.monotonic() < deadline:
                with system.context.sessions() as session:
                    done = session.scalars(select(Backup).where(Backup.state == "complete")).first()
                    claims = set(session.scalars(select(ScheduleClaim.key)))
                if done is not None and len(claims) >= 2:
                    break
                time.sleep(0.2)
    finally:
        beat.terminate()
        beat.wait(20)
    tick = firing.isoformat(timespec="minutes")
    assert f"backup:incremental:docs@{tick}" in claims, (claims, cluster.logs())
    assert f"backup:incremental:db@{tick}" in claims, (claims, cluster.logs())
    assert done is not None, cluster.logs()
    log = (cluster.logdir / "w1.log").read_text()
    assert "Task tasks.backup.scheduled_backups[" in log and "'db'" in log, log[-3000:]


def test_a_scheduled_run_of_a_locked_source_is_skipped_and_says_why(cluster: Cluster, tmp_path: Path) -> None:
    from tasks.backup import scheduled_backups

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    cluster.start_worker("w1")
    with BackupSystem() as system:
        system.add_source("docs", src)
        holder = locks.new_holder()  # this test process: alive, so the lease is held
        locks.acquire(system.context.sessions, "source:docs", holder, timedelta(minutes=10))
        scheduled_backups.delay("incremental").get(timeout=30)
        deadline = time.monotonic() + 30
        skipped = None
        while skipped is None and time.monotonic() < deadline:
            with system.context.sessions() as session:
                skipped = session.scalars(
                    select(Job).join(Source, Source.id == Job.source_id).where(Source.name == "docs")
                ).first()
            time.sleep(0.1)
        locks.release(system.context.sessions, "source:docs", holder)
    assert skipped is not None, f"no job row for the skipped run\n{cluster.logs()}"
    assert skipped.state == "skipped" and skipped.kind == "backup", skipped.state
    assert skipped.error and holder in skipped.error, skipped.error
    log = (cluster.logdir / "w1.log").read_text()
    assert f"scheduled incremental backup of source docs skipped (job {skipped.id})" in log, log[-3000:]
    status = subprocess.run(
        [sys.executable, "-m", "app.cli.main", "backup", "status"],
        env={**cluster.env, "COLUMNS": "250"}, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert status.returncode == 0, status.stderr
    (line,) = [row for row in status.stdout.splitlines() if skipped.id in row]
    assert "skipped" in line and holder in line, line
