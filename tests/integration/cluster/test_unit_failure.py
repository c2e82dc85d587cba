"""A unit that fails for good, on real workers, Redis and a PostgreSQL catalog: the backup fails within
the task's own round trip with the unit's error, the source is free again, an alert reaches the log and
(a loopback) Sentry, health says so, and the next run starts and completes. A cancelled job hands the
caller's `.get()` the cancellation, not an error of the errback.

Storage refusing writes is real: the repository's `packs` directory is made immutable (`chattr +i`),
which refuses even root (the tests run as root, for whom a read-only mode is no refusal)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.catalog.models import Backup, BackupUnit, Job, Lock
from app.system import BackupSystem
from tests.support.cluster import ROOT, Cluster
from tests.support.sentry_server import SentryServer, sentry_server  # noqa: F401  (fixture)
from tests.support.trees import flat_tree

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def refusing_packs(cluster: Cluster, tmp_path: Path) -> Iterator[Path]:
    """The repository's packs directory, immutable: every pack write fails with EPERM."""
    chattr = shutil.which("chattr")
    assert chattr, "chattr (Debian package e2fsprogs) is needed to make storage refuse writes"
    packs = tmp_path / "repo" / "packs"
    packs.mkdir(exist_ok=True)
    subprocess.run([chattr, "+i", str(packs)], check=True)
    try:
        probe = packs / "probe"
        with pytest.raises(PermissionError):
            probe.mkdir()
        yield packs
    finally:
        subprocess.run([chattr, "-i", str(packs)], check=True)


def _is_alert(backup_id: str):  # type: ignore[no-untyped-def]
    def match(event: dict[str, object]) -> bool:
        text = str(event.get("logentry") or event.get("message") or "")
        return backup_id in text and "unit" in text

    return match


def test_a_unit_refused_by_storage_fails_the_backup_at_once_and_frees_the_source(
    cluster: Cluster,
    sentry_server: SentryServer,  # noqa: F811  (the fixture)
    refusing_packs: Path,
    tmp_path: Path,
) -> None:
    from tasks.backup import run_backup

    src = flat_tree(tmp_path / "src", files=3, mib=1)
    units = {"BACKUP_UNIT_BYTES": str(1 << 20)}
    cluster.start_worker("w1", extra_env={**units, "SENTRY_DSN": sentry_server.dsn})
    with BackupSystem() as system:
        system.add_source("docs", src)
    os.environ.update(units)
    try:
        pending = run_backup.delay("docs", "full")
        with pytest.raises(Exception) as raised:
            pending.get(timeout=60)
    finally:
        for key in units:
            os.environ.pop(key, None)
    assert not isinstance(raised.value, TypeError), f"the errback failed: {raised.value!r}\n{cluster.logs()}"
    assert "Operation not permitted" in str(raised.value), raised.value

    with BackupSystem() as system, system.context.sessions() as session:
        (backup,) = session.scalars(select(Backup)).all()
        job = session.scalars(select(Job).where(Job.backup_id == backup.id)).one()
        failed_units = session.scalar(
            select(func.count()).where(BackupUnit.backup_id == backup.id, BackupUnit.state == "failed")
        )
        lease = session.get(Lock, "source:docs")
    # failed now, with the unit's own error (not 15 minutes later as "worker lost")
    assert backup.state == "failed", (backup.state, cluster.logs())
    assert backup.error and "unit" in backup.error and "packs/" in backup.error, backup.error
    assert "Operation not permitted" in backup.error and "worker lost" not in backup.error
    assert job.state == "failed" and job.error == backup.error, (job.state, job.error)
    assert failed_units >= 1
    assert lease is None, f"the source is still locked by {lease.holder}"

    # alerted: an error-level log line on the worker, and a Sentry event
    log = (cluster.logdir / "w1.log").read_text()
    assert f"ERROR/ForkPoolWorker-1] backup {backup.id} of source docs failed: unit" in log, log[-3000:]
    event = sentry_server.wait_for(_is_alert(backup.id), timeout=30)
    assert event.get("level") == "error", event.get("level")

    # health is not "healthy" while a backup failed in the last 24 h
    health = subprocess.run(
        [sys.executable, "-m", "app.cli.main", "dr", "health-check", "--json"],
        env=cluster.env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert health.returncode == 1 and '"status": "warning"' in health.stdout, health.stdout + health.stderr
    assert "failed backup" in health.stdout

    # storage accepts writes again: the next run starts (the source is free) and completes
    subprocess.run(["chattr", "-i", str(refusing_packs)], check=True)
    outcome = run_backup.delay("docs", "full").get(timeout=60)
    assert outcome["state"] == "complete", cluster.logs()


def test_cancel_hands_the_caller_the_cancellation(cluster: Cluster, tmp_path: Path) -> None:
    """The job is cancelled while its units wait in the queue (no worker reads `chunks` yet), so the
    cancellation is certain to come first; then a reader starts and meets it."""
    from tasks.backup import run_backup

    src = flat_tree(tmp_path / "src", files=3, mib=1)
    units = {"BACKUP_UNIT_BYTES": str(1 << 20)}
    cluster.start_worker("planner", queues="backup", extra_env=units)
    with BackupSystem() as system:
        system.add_source("docs", src)
    os.environ.update(units)
    try:
        pending = run_backup.delay("docs", "full")
        deadline = time.monotonic() + 60
        job_id = None
        with BackupSystem() as system:
            while job_id is None and time.monotonic() < deadline:
                with system.context.sessions() as session:
                    if session.scalar(select(func.count()).select_from(BackupUnit)):
                        job_id = session.scalar(select(Job.id).where(Job.kind == "backup"))
                time.sleep(0.05)
        assert job_id is not None, f"the backup was not planned:\n{cluster.logs()}"
        cancel = subprocess.run(
            [sys.executable, "-m", "app.cli.main", "job", "cancel", job_id],
            env=cluster.env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr
        cluster.start_worker("reader", queues="chunks", extra_env=units)
        with pytest.raises(Exception) as raised:
            pending.get(timeout=60)
    finally:
        for key in units:
            os.environ.pop(key, None)
    assert not isinstance(raised.value, TypeError), f"the errback failed: {raised.value!r}"
    assert "cancelled" in str(raised.value), repr(raised.value)
    with BackupSystem() as system, system.context.sessions() as session:
        backup = session.scalars(select(Backup)).one()
        assert backup.state == "cancelled", backup.state
        assert session.get(Lock, "source:docs") is None
