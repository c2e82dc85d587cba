"""The GDPR erasure ledger (docs/GDPR.md): a request recorded after a backup is re-applied by every
recovery that starts the server and by every drill, before the database is handed back, so a restore
never resurrects erased rows; a request that cannot be re-applied fails the recovery and stops the
server; a recovery not started says loudly that nothing was re-applied."""

from __future__ import annotations

import secrets

import psycopg
import pytest
from sqlalchemy import select

from app.backup.engine import run_backup
from app.catalog.models import AuditEntry
from app.context import Context
from app.drills.run import run_drills
from app.errors import ErasureError, SourceError
from app.pitr.manager import DisasterRecoveryManager
from app.pitr.server import running_pid
from app.system import BackupSystem
from tests.support.pg import server_url
from tests.support.pgarchive import SOURCE, Archive, write_fetch_script
from tests.support.pgcluster import PgCluster, RecoveryArea
from tests.support.ports import free_port
from tests.support.system import Factory

pytestmark = pytest.mark.slow

ERASE = "DELETE FROM customers WHERE email = 'alice@example.org'; DELETE FROM orders WHERE customer = 'alice'"


def _system(archive: Archive) -> BackupSystem:
    return BackupSystem(archive.ctx.settings, actor="dpo")


def _recover(archive: Archive, area: RecoveryArea, *, start: bool = True) -> tuple[object, int]:
    port = free_port()
    with DisasterRecoveryManager(context=archive.ctx, source=SOURCE) as manager:
        result = manager.execute_point_in_time_recovery(
            None,
            latest=True,
            target_dir=area.new_dir(),
            start=start,
            port=port,
            restore_command=write_fetch_script(area.base / "fetch.sh"),
            timeout=60,
        )
    return result, port


def test_a_restore_after_an_erasure_request_no_longer_holds_the_erased_rows(
    archive: Archive, archived_cluster: PgCluster, recovery_area: RecoveryArea
) -> None:
    archived_cluster.sql("CREATE TABLE customers (id serial PRIMARY KEY, email text)")
    archived_cluster.sql("CREATE TABLE orders (id serial PRIMARY KEY, customer text, total int)")
    archived_cluster.sql("INSERT INTO customers (email) VALUES ('alice@example.org'), ('bob@example.org')")
    archived_cluster.sql(
        "INSERT INTO orders (customer, total) VALUES ('alice', 10), ('alice', 20), ('bob', 5)"
    )
    run_backup(archive.ctx, SOURCE, "full")  # the backup holds alice, and stays as it is
    system = _system(archive)
    with pytest.raises(SourceError):
        system.record_erasure("nope", "postgres", "alice", ERASE, "Art. 17 request 2026-31")
    request = system.record_erasure(SOURCE, "postgres", "alice", ERASE, "Art. 17 request 2026-31")
    # Production is not erased here: the backup and every archived WAL record still hold alice, so only
    # the ledger's re-application can keep her out of the recovered copy.
    archived_cluster.sql("INSERT INTO orders (customer, total) VALUES ('alice', 30)")
    archived_cluster.wait_archived(archived_cluster.switch_wal())

    result, port = _recover(archive, recovery_area)
    assert result.success, f"{result.message}\n{result.problems}"  # type: ignore[attr-defined]
    assert recovery_area.sql(port, "SELECT email FROM customers ORDER BY id") == [("bob@example.org",)]
    assert recovery_area.sql(port, "SELECT customer, total FROM orders ORDER BY id") == [("bob", 5)]
    assert result.erasures == {  # type: ignore[attr-defined]
        "where": f"pitr {result.target_dir}",  # type: ignore[attr-defined]
        "applied": [request["id"]],
        "failed": [],
    }

    assert archived_cluster.sql("SELECT count(*) FROM orders WHERE customer = 'alice'") == [
        (3,)
    ]  # the source has her

    # not started: nothing can be re-applied, and the result says so
    restored, _ = _recover(archive, recovery_area, start=False)
    assert restored.success and "NOT re-applied" in restored.message  # type: ignore[attr-defined]
    assert restored.erasures["pending"] == [request["id"]]  # type: ignore[attr-defined]

    # a drill re-applies them too, before it counts the rows
    settings = archive.ctx.settings.model_copy(
        update={
            "pitr_restore_command": write_fetch_script(recovery_area.base / "fetch.sh"),
            "backup_drill_dir": recovery_area.base / "drills",
        }
    )
    ctx = Context(settings)
    try:
        [drill] = run_drills(ctx, source=SOURCE)
    finally:
        ctx.close()
    assert drill.outcome == "passed", drill.to_json()
    assert any("re-applied 1 erasure request" in line for line in drill.checks), drill.checks

    # a request whose SQL fails: the recovery fails and the server is not left running
    system.record_erasure(SOURCE, "postgres", "carol", "DELETE FROM no_such_table", "request 2026-32")
    failed, _ = _recover(archive, recovery_area)
    assert not failed.success and "could not be re-applied" in failed.message  # type: ignore[attr-defined]
    assert running_pid(failed.target_dir) is None  # type: ignore[attr-defined]

    with archive.ctx.sessions() as session:
        actions = [e.action for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert "gdpr.erasure_recorded" in actions
    assert actions.count("gdpr.reapplied") >= 3  # the recovery, the drill, the failed recovery's first
    assert actions.count("gdpr.reapply_failed") == 1
    assert system.verify_audit_trail().ok
    system.close()


@pytest.mark.postgres
def test_a_logical_import_reapplies_the_erasures_of_its_database(make_system: Factory) -> None:
    server = server_url()
    admin = psycopg.connect(server.set(drivername="postgresql").render_as_string(False), autocommit=True)
    names = [f"eqdr_gdpr_{secrets.token_hex(4)}" for _ in range(3)]
    for name in names:
        admin.execute(f'CREATE DATABASE "{name}"')
    source_dsn, target_dsn, bad_dsn = (
        server.set(drivername="postgresql", database=n).render_as_string(False) for n in names
    )
    system = make_system()
    try:
        with psycopg.connect(source_dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE customers (id int PRIMARY KEY, email text)")
            conn.execute("INSERT INTO customers VALUES (1, 'alice@example.org'), (2, 'bob@example.org')")
        system.add_postgres_source("app", source_dsn)
        backup_id = system.create_logical_export("app").id
        request = system.record_erasure(
            "app", names[0], "customer 1", "DELETE FROM customers WHERE id = 1", "Art. 17 request 2026-33"
        )
        system.record_erasure("app", "another_db", "customer 9", "DELETE FROM nowhere", "not this database")

        system.restore_logical_export(backup_id, target_dsn)
        with psycopg.connect(target_dsn) as conn:
            assert conn.execute("SELECT id FROM customers ORDER BY id").fetchall() == [(2,)]
        with system.context.sessions() as session:
            reapplied = [
                e.detail
                for e in session.scalars(select(AuditEntry).where(AuditEntry.action == "gdpr.reapplied"))
            ]
        assert [d["erasure"] for d in reapplied] == [request["id"]] and reapplied[0]["database"] == names[1]

        system.record_erasure("app", names[0], "customer 2", "DELETE FROM no_such_table", "broken request")
        with pytest.raises(ErasureError, match="could not be re-applied"):
            system.restore_logical_export(backup_id, bad_dsn)
    finally:
        system.close()
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
