"""tasks.maintenance.reconcile: routed to queue `maintenance`, calls the domain core, returns JSON."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.support.trees import make_tree


def test_the_reconcile_task_removes_a_failed_backups_unit_objects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EQUISPLIT_DR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BACKUP_ENCRYPTION_KEY", secrets.token_hex(32))
    monkeypatch.setenv("BACKUP_RECONCILE_GRACE_SECONDS", "0")
    from app.backup.finalize import fail_backup
    from app.backup.prepare import prepare_backup
    from app.repo.format import Kind
    from app.system import BackupSystem
    from tasks.maintenance import reconcile
    from workers import app

    monkeypatch.setattr("workers.base._context", None)  # this test's home, not an earlier test's
    assert app.amqp.router.route({}, "tasks.maintenance.reconcile")["queue"].name == "maintenance"
    with BackupSystem() as system:
        system.init()
        system.add_source("docs", make_tree(tmp_path / "src", big_mib=1, small=2))
        prepared = prepare_backup(system.context, "docs", "full", cluster=True)
        fail_backup(system.context, prepared.backup_id, "worker lost: no heartbeat")  # as the reaper does
        left = sorted(i.name for i in system.context.storage.list(Kind.UNITS))
    assert left
    app.conf.task_always_eager = True
    try:
        dry = reconcile.apply(kwargs={"dry_run": True}).get()
        result = reconcile.apply().get()
    finally:
        app.conf.task_always_eager = False
    json.dumps(result)
    assert sorted(dry["deleted_units"]) == left and dry["dry_run"]
    assert sorted(result["deleted_units"]) == left
    with BackupSystem() as system:
        assert list(system.context.storage.list(Kind.UNITS)) == []
        assert system.list_backups("docs")[0]["state"] == "failed"
