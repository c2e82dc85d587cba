"""Workers take the catalog's insert-only role by themselves (docs/AUDIT.md section 4): the migration
creates `equisplit_worker`, a real Celery worker's connections `SET ROLE` to it and back up as usual, and
through a connection built as workers build theirs, PostgreSQL itself refuses UPDATE, DELETE and
TRUNCATE of audit rows even with the append-only triggers dropped."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import text

from app.catalog.db import make_engine
from app.context import Context
from app.errors import ConfigurationError
from app.settings import load_settings
from app.system import BackupSystem
from tests.support.cluster import Cluster
from tests.support.trees import make_tree

pytestmark = [pytest.mark.postgres]


def test_a_worker_backs_up_as_the_worker_role_and_cannot_rewrite_the_trail(
    cluster: Cluster, tmp_path: Path
) -> None:
    from tasks.backup import run_backup

    src = make_tree(tmp_path / "src", big_mib=0, small=4)
    with BackupSystem() as system:
        system.add_source("docs", src)
    cluster.start_worker("w1")
    outcome = run_backup.delay("docs", "full").get(timeout=120)
    assert outcome["state"] == "complete", cluster.logs()

    owner = make_engine(cluster.env["DATABASE_URL"])
    worker_ctx = Context(load_settings())
    worker_ctx.process = "worker"  # as workers.base.process_context builds it
    try:
        with owner.begin() as conn:  # the catalog owner drops the triggers: only the role stands
            conn.execute(text("DROP TRIGGER audit_log_append_only ON audit_log"))
            conn.execute(text("DROP TRIGGER audit_log_no_truncate ON audit_log"))
        with worker_ctx.engine.connect() as conn:
            assert conn.scalar(text("SELECT current_user")) == "equisplit_worker"
            assert conn.scalar(text("SELECT count(*) FROM audit_log")) > 0
        for statement in (
            "UPDATE audit_log SET actor = 'mallory'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"), worker_ctx.engine.begin() as c:
                c.execute(text(statement))

        # The real worker's connections run as the role too: take a right from it in this catalog,
        # and its next backup is refused by PostgreSQL.
        with owner.begin() as conn:
            conn.execute(text("REVOKE INSERT ON jobs FROM equisplit_worker"))
        with pytest.raises(Exception, match="permission denied"):
            run_backup.delay("docs", "full").get(timeout=120)
    finally:
        worker_ctx.close()
        owner.dispose()
    with BackupSystem() as system:
        assert system.verify_audit_trail().ok


def _worker_config_rows(engine: sa.Engine, at_least: int) -> list[Any]:
    """The configuration entries of workers, once there are `at_least` (each pool child compares its
    settings in its warm-up thread, after the worker says it is ready)."""
    deadline = time.monotonic() + 60
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT action, detail FROM audit_log WHERE object = 'worker' ORDER BY id")
            ).all()
        if len(rows) >= at_least or time.monotonic() > deadline:
            return list(rows)
        time.sleep(0.3)


def test_a_worker_started_with_a_changed_setting_records_it_once(cluster: Cluster) -> None:
    engine = make_engine(cluster.env["DATABASE_URL"])
    try:
        cluster.start_worker("w1")
        assert [a for a, _ in _worker_config_rows(engine, 1)] == ["config.recorded"], cluster.logs()
        changed = {"BACKUP_RETENTION_WEEKLY": "5"}
        cluster.start_worker("w2", concurrency=2, extra_env=changed)
        cluster.start_worker("w3", concurrency=2, extra_env=changed)
        _worker_config_rows(engine, 2)
        time.sleep(2)  # every other child of w2 and w3 has had its turn: none records it again
        rows = _worker_config_rows(engine, 2)
    finally:
        engine.dispose()
    assert [a for a, _ in rows] == ["config.recorded", "config.changed"], cluster.logs()
    assert rows[1][1]["changed"] == {"BACKUP_RETENTION_WEEKLY": {"old": "12", "new": "5"}}
    key = cluster.env["BACKUP_ENCRYPTION_KEY"]
    assert rows[0][1]["settings"]["BACKUP_ENCRYPTION_KEY"].startswith("scrypt:")
    assert key not in cluster.logs() and all(key not in json.dumps(d) for _, d in rows)


def test_the_cli_takes_the_role_only_when_asked(cluster: Cluster) -> None:
    cli = Context(load_settings())
    cli.process = "cli"
    asked = Context(load_settings().model_copy(update={"backup_catalog_use_worker_role": "all"}))
    missing = Context(
        load_settings().model_copy(
            update={"backup_catalog_use_worker_role": "all", "backup_catalog_worker_role": "eqdr_missing_role"}
        )
    )
    try:
        with cli.engine.connect() as conn:
            assert conn.scalar(text("SELECT current_user")) == sa.make_url(os.environ["DATABASE_URL"]).username
        with asked.engine.connect() as conn:
            assert conn.scalar(text("SELECT current_user")) == "equisplit_worker"
        with pytest.raises(ConfigurationError, match="cannot take role eqdr_missing_role"), missing.engine.connect():
            pass
    finally:
        cli.close()
        asked.close()
        missing.close()
