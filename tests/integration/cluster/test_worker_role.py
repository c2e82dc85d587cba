"""Workers take the catalog's insert-only role by themselves (docs/AUDIT.md section 4): the migration
creates `equisplit_worker`, a real Celery worker's connections `SET ROLE` to it and back up as usual, and
through a connection built as workers build theirs, PostgreSQL itself refuses UPDATE, DELETE and
TRUNCATE of audit rows even with the append-only triggers dropped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import text

from app.catalog.db import make_engine
from app.context import Context
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


def test_the_cli_takes_the_role_only_when_asked(cluster: Cluster) -> None:
    cli = Context(load_settings())
    cli.process = "cli"
    asked = Context(load_settings().model_copy(update={"backup_catalog_use_worker_role": "all"}))
    try:
        with cli.engine.connect() as conn:
            assert conn.scalar(text("SELECT current_user")) == sa.make_url(os.environ["DATABASE_URL"]).username
        with asked.engine.connect() as conn:
            assert conn.scalar(text("SELECT current_user")) == "equisplit_worker"
    finally:
        cli.close()
        asked.close()
