"""The tasks call the domain core and return ids only (run eagerly here; real workers: cluster tests)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
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
    os.link(src / "docs" / "private.key", src / "key-link")  # a hard link crosses the plan object too
    with BackupSystem() as system:
        system.init()
        system.add_source("docs", src)
    app.conf.task_always_eager = True
    try:
        result = run_backup.apply(args=("docs", "full")).get()
        assert result["state"] == "complete" and result["type"] == "full"
        json.dumps(result)  # JSON-serialisable: ids and names, no bytes
        out = tmp_path / "home" / "restores" / "out"  # the default BACKUP_RESTORE_ROOTS
        restored = restore_backup.apply(args=(result["backup_id"], str(out))).get()
        assert restored["files"] == 6
        assert_same_tree(src, out)
        assert (out / "key-link").stat().st_ino == (out / "docs" / "private.key").stat().st_ino
        shutil.rmtree(src)  # the share is gone: an empty tree is partial unless confirmed
        src.mkdir()
        shrunk = run_backup.apply(args=("docs", "incremental")).get()
        assert (shrunk["state"], shrunk["warnings"]) == ("partial", 1)
        confirmed = run_backup.apply(args=("docs", "incremental"), kwargs={"allow_shrink": True}).get()
        assert confirmed["state"] == "complete"
    finally:
        app.conf.task_always_eager = False


def test_a_postgres_backup_runs_whole_in_the_planning_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its session must outlive every unit, so the task runs the engine in-process rather than a chord:
    here it reaches the connection (refused: nothing listens) instead of planning units."""
    monkeypatch.setenv("EQUISPLIT_DR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BACKUP_ENCRYPTION_KEY", secrets.token_hex(32))
    from app.backup.prepare import prepare_backup
    from app.catalog.db import transaction
    from app.catalog.sources import add_postgres_source
    from app.errors import ConfigurationError, SourceError
    from app.system import BackupSystem
    from tasks.backup import run_backup
    from workers import app

    monkeypatch.setattr("workers.base._context", None)  # this test's home, not an earlier test's
    with BackupSystem() as system:
        system.init()
        with transaction(system.context.sessions) as session:
            add_postgres_source(session, "db", "host=127.0.0.1 port=1 user=postgres connect_timeout=2")
        with pytest.raises(ConfigurationError, match="runs in one process"):
            prepare_backup(system.context, "db", "full", cluster=True)
    app.conf.task_always_eager = True
    try:
        with pytest.raises(SourceError, match="cannot connect to the PostgreSQL cluster of source db"):
            run_backup.apply(args=("db", "full")).get()
    finally:
        app.conf.task_always_eager = False
    with BackupSystem() as system:
        (row,) = system.list_backups("db")
        assert row["state"] == "failed" and "cannot connect" in row["error"]
