"""The tasks call the domain core and return ids only (run eagerly here; real workers: cluster tests)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.support.trees import assert_same_tree, make_tree


def test_backup_and_restore_tasks_return_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EQUISPLIT_DR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BACKUP_ENCRYPTION_KEY", secrets.token_hex(32))
    from app.system import BackupSystem
    from tasks.backup import run_backup
    from tasks.restore import restore_backup
    from workers import app

    src = make_tree(tmp_path / "src", big_mib=1, small=2)
    with BackupSystem() as system:
        system.init()
        system.add_source("docs", src)
    app.conf.task_always_eager = True
    try:
        result = run_backup.apply(args=("docs", "full")).get()
        assert result["state"] == "complete" and result["type"] == "full"
        json.dumps(result)  # JSON-serialisable: ids and names, no bytes
        restored = restore_backup.apply(args=(result["backup_id"], str(tmp_path / "out"))).get()
        assert restored["files"] == 6
    finally:
        app.conf.task_always_eager = False
    assert_same_tree(src, tmp_path / "out")
