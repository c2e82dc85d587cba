"""Read-only commands that reveal what a backup holds, or what the trail says, are audited as
`data.accessed` with their actor and what was read (docs/AUDIT.md section 7)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from app.catalog.db import make_engine
from app.catalog.models import AuditEntry
from tests.support.cli import cli_env_for, run_cli
from tests.support.system import Factory
from tests.support.trees import make_tree


def _accesses(url: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(AuditEntry.actor, AuditEntry.object, AuditEntry.detail)
                .where(AuditEntry.action == "data.accessed")
                .order_by(AuditEntry.id)
            )
            return [(a, o, d) for a, o, d in rows]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_show_files_logs_and_a_dry_run_are_audited_as_data_access(tmp_path: Path, fresh_pg_url: str) -> None:
    src = make_tree(tmp_path / "src", big_mib=0, small=4)
    env = cli_env_for(tmp_path / "home", database_url=fresh_pg_url, dr_actor="carol")
    for args in (("init",), ("source", "add", "docs", "--path", str(src)), ("backup", "run", "-s", "docs")):
        run_cli(env, *args, ok=True)
    assert _accesses(fresh_pg_url) == []  # a backup run prints its own summary: not a data access

    shown = run_cli(env, "backup", "show", "latest", "-s", "docs", "--json", ok=True)
    backup_id = shown.stdout.split('"id": "', 1)[1].split('"', 1)[0]
    listed = run_cli(env, "backup", "show", "latest", "-s", "docs", "--files", ok=True)
    assert "file" in listed.stdout
    run_cli(env, "backup", "logs", "--json", ok=True)
    run_cli(env, "restore", backup_id, "--target", str(tmp_path / "out"), "--dry-run", ok=True)

    rows = _accesses(fresh_pg_url)
    assert [(actor, obj, d["read"]) for actor, obj, d in rows] == [
        ("carol", backup_id, "backup"),
        ("carol", backup_id, "backup files"),
        ("carol", "audit_log", "audit trail"),
        ("carol", backup_id, "restore plan"),
    ]
    assert rows[1][2]["entries"] >= 4 and rows[3][2]["files"] >= 4


def test_reading_a_truncated_trail_appends_nothing_so_rebuild_can_bring_it_back(tmp_path: Path) -> None:
    env = cli_env_for(tmp_path / "home")
    src = make_tree(tmp_path / "src", big_mib=0, small=2)
    for args in (("init",), ("source", "add", "docs", "--path", str(src)), ("audit", "anchor")):
        run_cli(env, *args, ok=True)
    url = f"sqlite:///{tmp_path / 'home' / 'catalog.sqlite3'}"
    engine = make_engine(url)
    try:
        with engine.begin() as conn:  # the newest entries deleted behind the anchor's back
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))
            conn.execute(text("DELETE FROM audit_log WHERE id > 1"))
    finally:
        engine.dispose()
    env["BACKUP_RETENTION_DAILY"] = "9"  # a changed configuration is not recorded on such a trail either
    logs = run_cli(env, "backup", "logs", "--json", ok=True)
    assert "UNVERIFIED audit trail" in logs.stderr
    assert run_cli(env, "audit", "verify").returncode == 18
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM audit_log")) == 1
    finally:
        engine.dispose()
    rebuilt = run_cli(env, "catalog", "rebuild", "--json", ok=True)
    assert json.loads(rebuilt.stdout)["audit"]["restored"] >= 2
    assert run_cli(env, "audit", "verify").returncode == 0


@pytest.mark.postgres
def test_a_restore_is_audited_when_it_starts_and_when_it_ends(make_system: Factory, fresh_pg_url: str, tmp_path: Path) -> None:
    system = make_system(catalog=fresh_pg_url)
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=0, small=3))
    backup = system.create_full_backup("docs").id
    system.restore(backup, tmp_path / "out")
    with system.context.sessions() as session:
        rows = list(
            session.execute(
                select(AuditEntry.action, AuditEntry.object, AuditEntry.detail)
                .where(AuditEntry.action.like("restore.%"))
                .order_by(AuditEntry.id)
            )
        )
    assert [(a, o) for a, o, _ in rows] == [("restore.started", backup), ("restore.completed", backup)]
    assert rows[0][2]["target"] == str(tmp_path / "out") and rows[0][2]["job"].startswith("j-")
