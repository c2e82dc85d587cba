"""`dr execute` (docs/RUNBOOKS.md): a documented procedure run step by step, each step's outcome and
duration printed, returned and audited; a failing step stops the procedure and the rest are skipped,
never reported done; --dry-run lists the steps and runs nothing."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from app.backup.engine import run_backup
from app.catalog.models import AuditEntry
from app.runbooks.procedures import build_steps
from app.runbooks.run import run_procedure
from app.system import BackupSystem
from tests.support.pgarchive import SOURCE, Archive, write_fetch_script
from tests.support.pgcluster import PgCluster, RecoveryArea
from tests.support.ports import free_port
from tests.support.trees import assert_same_tree, make_tree

ROOT = Path(__file__).resolve().parents[2]


def test_cli_full_restore_runs_each_step_and_stops_at_the_first_failure(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BACKUP_", "DATABASE_URL", "EQUISPLIT", "DR_"))
    }
    env.update(
        EQUISPLIT_DR_HOME=str(tmp_path / "home"),
        BACKUP_ENCRYPTION_KEY=secrets.token_hex(32),
        PYTHONPATH=str(ROOT),
        COLUMNS="200",
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli.main", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    docs = make_tree(tmp_path / "docs", big_mib=1, small=5)
    photos = make_tree(tmp_path / "photos", big_mib=0, small=3, seed=7)
    for args in (
        ("init",),
        ("source", "add", "docs", "--path", str(docs)),
        ("source", "add", "photos", "--path", str(photos)),
        ("backup", "run", "-s", "docs"),
        ("backup", "run", "-s", "photos"),
    ):
        assert cli(*args).returncode == 0, args

    target = tmp_path / "dr"
    plan = cli("dr", "execute", "--procedure", "full-restore", "--target", str(target), "--dry-run")
    assert plan.returncode == 0 and not target.exists()
    for name in ("test-connection", "verify-latest", "restore", "compare"):
        assert name in plan.stdout

    run = cli("dr", "execute", "--procedure", "full-restore", "--target", str(target), "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    doc = json.loads(run.stdout)
    assert doc["success"] and [s["name"] for s in doc["steps"]] == [
        "test-connection",
        "verify-latest",
        "restore",
        "compare",
    ]
    assert all(s["outcome"] == "ok" and s["seconds"] is not None and s["started_at"] for s in doc["steps"])
    assert_same_tree(docs, target / "docs")
    assert_same_tree(photos, target / "photos")

    again = cli("dr", "execute", "--procedure", "full-restore", "--target", str(target))  # not empty now
    assert again.returncode == 15, again.stdout + again.stderr
    assert "failed  restore" in again.stdout and "is not empty" in again.stdout
    assert "skipped compare" in again.stdout and "FAILED" in again.stdout

    logs = json.loads(cli("backup", "logs", "--json").stdout)
    steps = [(r["object"], r["detail"]["outcome"]) for r in logs if r["action"] == "runbook.step"]
    assert steps[:4] == [
        (f"full-restore/{n}", "ok") for n in ("test-connection", "verify-latest", "restore", "compare")
    ]
    assert steps[4:] == [
        ("full-restore/test-connection", "ok"),
        ("full-restore/verify-latest", "ok"),
        ("full-restore/restore", "failed"),
    ]
    assert [r["action"] for r in logs if r["action"].startswith("runbook.")].count("runbook.failed") == 1


@pytest.mark.slow
def test_database_failover_recovers_starts_reapplies_erasures_and_reports_the_rto(
    archive: Archive, archived_cluster: PgCluster, recovery_area: RecoveryArea
) -> None:
    archived_cluster.sql("CREATE TABLE people (id serial PRIMARY KEY, name text)")
    archived_cluster.sql("INSERT INTO people (name) VALUES ('ann'), ('ben')")
    run_backup(archive.ctx, SOURCE, "full")
    archived_cluster.sql("INSERT INTO people (name) VALUES ('cid')")
    archived_cluster.wait_archived(archived_cluster.switch_wal())
    settings = archive.ctx.settings.model_copy(
        update={"pitr_restore_command": write_fetch_script(recovery_area.base / "fetch.sh")}
    )
    system = BackupSystem(settings, actor="oncall")
    try:
        system.record_erasure(SOURCE, "postgres", "ben", "DELETE FROM people WHERE name = 'ben'", "request 9")
        port = free_port()
        steps = build_steps(system, "database-failover", recovery_area.new_dir(), source=SOURCE, port=port)
        result = run_procedure(system.context, "database-failover", steps, dry_run=False, actor="oncall")
        assert result.success, result.to_json()
        assert [s.name for s in result.steps] == ["plan", "recover", "report"]
        assert "1 erasure request(s) re-applied" in result.steps[1].detail
        assert result.steps[2].detail.startswith("RTO ")
        assert recovery_area.sql(port, "SELECT name FROM people ORDER BY id") == [("ann",), ("cid",)]
        with system.context.sessions() as session:
            actions = [
                e.action
                for e in session.scalars(select(AuditEntry).where(AuditEntry.action.like("runbook.%")))
            ]
        assert actions == [
            "runbook.started",
            "runbook.step",
            "runbook.step",
            "runbook.step",
            "runbook.finished",
        ]
    finally:
        system.close()
