"""The audit trail (docs/AUDIT.md): the catalog refuses UPDATE and DELETE of audit rows; a row edited,
removed or reordered by direct SQL (the trigger dropped) is named by `audit verify` and marked by
`backup logs`; a trail truncated behind the newest anchor is detected and `catalog rebuild` brings the
anchored entries back; an insert-only role can append but not rewrite; restores and deletions can
need a second person's approval."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import select, text

from app.catalog import audit
from app.catalog.db import make_engine, transaction
from app.catalog.models import AuditEntry
from app.errors import ApprovalError
from app.system import BackupSystem
from tests.support.system import Factory, settings_for
from tests.support.trees import make_tree

ROOT = Path(__file__).resolve().parents[2]


def _fill(system: BackupSystem, n: int = 6) -> None:
    with transaction(system.context.sessions) as session:
        for i in range(n):
            audit.append(session, "test.event", f"object {i}", {"n": i}, "tester")


def _drop_triggers(system: BackupSystem) -> None:
    with system.context.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("DROP TRIGGER audit_log_append_only ON audit_log"))
            conn.execute(text("DROP TRIGGER audit_log_no_truncate ON audit_log"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))


def _ids(system: BackupSystem) -> list[int]:
    with system.context.sessions() as session:
        return list(session.scalars(select(AuditEntry.id).order_by(AuditEntry.id)))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog_system(request: pytest.FixtureRequest, make_system: Factory) -> BackupSystem:
    if request.param == "sqlite":
        return make_system()
    return make_system(catalog=request.getfixturevalue("fresh_pg_url"))


def test_the_catalog_refuses_update_and_delete_of_audit_rows(catalog_system: BackupSystem) -> None:
    _fill(catalog_system, 2)
    first = _ids(catalog_system)[0]
    for statement in (
        f"UPDATE audit_log SET actor = 'mallory' WHERE id = {first}",
        f"DELETE FROM audit_log WHERE id = {first}",
    ):
        with (
            pytest.raises(sa.exc.DatabaseError, match="append-only"),
            catalog_system.context.engine.begin() as conn,
        ):
            conn.execute(text(statement))
    assert catalog_system.verify_audit_trail().ok


def test_edited_removed_and_reordered_rows_are_named(catalog_system: BackupSystem) -> None:
    _fill(catalog_system)
    assert catalog_system.verify_audit_trail().ok
    _drop_triggers(catalog_system)
    ids = _ids(catalog_system)
    engine = catalog_system.context.engine

    with engine.begin() as conn:  # reorder: two rows swap places in the trail, hashes and all
        conn.execute(text(f"UPDATE audit_log SET id = -1 WHERE id = {ids[3]}"))
        conn.execute(text(f"UPDATE audit_log SET id = {ids[3]} WHERE id = {ids[4]}"))
        conn.execute(text(f"UPDATE audit_log SET id = {ids[4]} WHERE id = -1"))
    check = catalog_system.verify_audit_trail()
    assert check.problem is not None and (check.problem.kind, check.problem.entry_id) == ("reordered", ids[3])

    with engine.begin() as conn:  # put them back, and remove a row instead
        conn.execute(text(f"UPDATE audit_log SET id = -1 WHERE id = {ids[3]}"))
        conn.execute(text(f"UPDATE audit_log SET id = {ids[3]} WHERE id = {ids[4]}"))
        conn.execute(text(f"UPDATE audit_log SET id = {ids[4]} WHERE id = -1"))
    assert catalog_system.verify_audit_trail().ok
    with engine.begin() as conn:
        conn.execute(text(f"DELETE FROM audit_log WHERE id = {ids[2]}"))
    check = catalog_system.verify_audit_trail()
    assert check.problem is not None and (check.problem.kind, check.problem.entry_id) == ("removed", ids[3])

    with engine.begin() as conn:  # edit an earlier row: the first problem moves up to it
        conn.execute(text(f"UPDATE audit_log SET actor = 'mallory' WHERE id = {ids[1]}"))
    check = catalog_system.verify_audit_trail()
    assert check.problem is not None and (check.problem.kind, check.problem.entry_id) == ("edited", ids[1])
    assert f"audit entry {ids[1]}" in check.problem.message


def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
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
        **extra,
    )
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli.main", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.postgres
def test_audit_verify_catches_a_row_edited_by_direct_sql(tmp_path: Path, fresh_pg_url: str) -> None:
    env = _cli_env(tmp_path, DATABASE_URL=fresh_pg_url)
    src = make_tree(tmp_path / "src", big_mib=0, small=3)
    for args in (("init",), ("source", "add", "docs", "--path", str(src)), ("backup", "run", "-s", "docs")):
        assert _cli(env, *args).returncode == 0
    ok = _cli(env, "audit", "verify")
    assert ok.returncode == 0 and "audit trail verified" in ok.stdout, ok.stderr
    engine = make_engine(fresh_pg_url)
    try:
        with engine.begin() as conn:
            target = conn.scalar(text("SELECT id FROM audit_log WHERE action = 'source.added'"))
            with pytest.raises(sa.exc.DatabaseError, match="append-only"), engine.begin() as other:
                other.execute(text(f"UPDATE audit_log SET actor = 'mallory' WHERE id = {target}"))
        with engine.begin() as conn:  # the attacker drops the trigger first
            conn.execute(text("DROP TRIGGER audit_log_append_only ON audit_log"))
            conn.execute(text(f"UPDATE audit_log SET actor = 'mallory' WHERE id = {target}"))
    finally:
        engine.dispose()
    bad = _cli(env, "audit", "verify")
    assert bad.returncode == 18, bad.stdout + bad.stderr
    assert f"audit entry {target} (source.added) was edited" in bad.stderr
    logs = _cli(env, "backup", "logs", "--json")
    assert logs.returncode == 0 and "UNVERIFIED audit trail" in logs.stderr
    marks = {r["id"]: r["verified"] for r in json.loads(logs.stdout)}
    assert marks and all(ok is (i < target) for i, ok in marks.items())


def test_truncation_is_detected_against_the_anchor_and_rebuild_brings_it_back(
    catalog_system: BackupSystem,
) -> None:
    _fill(catalog_system, 5)
    heads = catalog_system.anchor_audit_trail()
    assert heads and heads[-1].last_id == _ids(catalog_system)[-1]
    assert catalog_system.anchor_audit_trail() == []  # nothing new: no second anchor
    _fill(catalog_system, 3)
    catalog_system.anchor_audit_trail()
    anchored = _ids(catalog_system)
    with catalog_system.context.sessions() as session:
        hashes = list(session.scalars(select(AuditEntry.hash).order_by(AuditEntry.id)))

    _drop_triggers(catalog_system)
    with catalog_system.context.engine.begin() as conn:  # truncate the tail: the chain alone still verifies
        conn.execute(text(f"DELETE FROM audit_log WHERE id > {anchored[2]}"))
    check = catalog_system.verify_audit_trail()
    assert check.problem is not None and check.problem.kind == "truncated"
    assert check.problem.entry_id == anchored[-1] and f"up to {anchored[-1]}" in check.problem.message

    report = catalog_system.rebuild_catalog()
    assert report.audit is not None and report.audit["restored"] == len(anchored) - 3
    with catalog_system.context.sessions() as session:
        back = list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
    assert [e.hash for e in back[: len(anchored)]] == hashes
    assert back[-1].action == "catalog.rebuilt"  # appended after the entries brought back
    assert catalog_system.verify_audit_trail().ok


def test_a_lost_catalog_gets_its_anchored_trail_back(make_system: Factory, tmp_path: Path) -> None:
    key = secrets.token_hex(32)
    first = make_system(key=key)
    _fill(first, 4)
    first.anchor_audit_trail()
    with first.context.sessions() as session:
        hashes = list(session.scalars(select(AuditEntry.hash).order_by(AuditEntry.id)))
    storage = first.settings.storage_url
    first.close()

    second = BackupSystem(settings_for(tmp_path / "other", storage=storage, key=key), actor="test")
    try:
        report = second.rebuild_catalog()
        assert report.audit is not None and report.audit["restored"] == len(hashes)
        with second.context.sessions() as session:
            back = list(session.scalars(select(AuditEntry.hash).order_by(AuditEntry.id)))
        assert back[: len(hashes)] == hashes
        assert second.verify_audit_trail().ok
    finally:
        second.close()


def test_a_rewritten_trail_is_not_anchored(system: BackupSystem) -> None:
    _fill(system, 3)
    system.anchor_audit_trail()
    _fill(system, 2)
    _drop_triggers(system)
    with system.context.engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_log SET actor = 'mallory' WHERE id = (SELECT max(id) FROM audit_log)")
        )
    from app.errors import AuditTrailError

    with pytest.raises(AuditTrailError, match="does not chain"):
        system.anchor_audit_trail()


@pytest.mark.postgres
def test_an_insert_only_role_can_append_but_not_rewrite(make_system: Factory, fresh_pg_url: str) -> None:
    system = make_system(catalog=fresh_pg_url)
    role = f"eqdr_worker_{secrets.token_hex(4)}"
    with system.context.engine.begin() as conn:  # a login limited as migration 0013_worker_role limits equisplit_worker
        conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f"GRANT INSERT, SELECT ON audit_log TO {role}"))
        conn.execute(text(f"GRANT USAGE ON SEQUENCE audit_log_id_seq TO {role}"))
    worker = make_engine(sa.make_url(fresh_pg_url).set(username=role).render_as_string(hide_password=False))
    try:
        with transaction(sa.orm.sessionmaker(worker)) as session:
            audit.append(session, "test.event", "by the worker", {}, "worker")
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"), worker.begin() as conn:
            conn.execute(text("UPDATE audit_log SET actor = 'mallory'"))
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"), worker.begin() as conn:
            conn.execute(text("DELETE FROM audit_log"))
    finally:
        worker.dispose()
        with system.context.engine.begin() as conn:
            conn.execute(text(f"REVOKE ALL ON audit_log FROM {role}"))
            conn.execute(text(f"REVOKE ALL ON SEQUENCE audit_log_id_seq FROM {role}"))
            conn.execute(text(f"DROP ROLE {role}"))
    assert system.verify_audit_trail().ok


def test_restore_and_deletion_need_a_second_persons_approval(make_system: Factory, tmp_path: Path) -> None:
    alice = make_system(dr_approval_required=["restore", "delete"])
    bob = BackupSystem(alice.settings, actor="bob")
    alice.actor = "alice"
    try:
        src = make_tree(tmp_path / "src", big_mib=0, small=3)
        alice.add_source("docs", src)
        backup_id = alice.create_full_backup("docs").id
        with pytest.raises(ApprovalError, match="second person's approval"):
            alice.restore(backup_id, tmp_path / "out")
        assert not (tmp_path / "out").exists()
        alice.restore(backup_id, tmp_path / "dry", dry_run=True)  # a dry run needs none

        approval = alice.request_approval("restore", backup_id, "INC-7")["id"]
        with pytest.raises(ApprovalError, match="second person must grant"):
            alice.grant_approval(approval)
        with pytest.raises(ApprovalError, match="not granted"):
            alice.restore(backup_id, tmp_path / "out", approval=approval)
        bob.grant_approval(approval)
        with pytest.raises(ApprovalError, match="cannot also carry it out"):
            bob.restore(backup_id, tmp_path / "out", approval=approval)
        alice.restore(backup_id, tmp_path / "out", approval=approval)
        assert (tmp_path / "out").is_dir()
        with pytest.raises(ApprovalError, match="already used"):
            alice.restore(backup_id, tmp_path / "again", approval=approval)

        with pytest.raises(ApprovalError):
            alice.apply_retention(confirm=True)
        alice.apply_retention()  # a dry run needs none
        delete = bob.request_approval("delete", "*", "quarterly clean-up")["id"]
        alice.grant_approval(delete)
        bob.apply_retention(confirm=True, approval=delete)

        with alice.context.sessions() as session:
            trail: list[tuple[str, str, Any]] = [
                (e.action, e.actor, e.detail)
                for e in session.scalars(
                    select(AuditEntry).where(AuditEntry.action.like("approval.%")).order_by(AuditEntry.id)
                )
            ]
        assert [(a, who) for a, who, _ in trail] == [
            ("approval.requested", "alice"),
            ("approval.granted", "bob"),
            ("approval.used", "alice"),
            ("approval.requested", "bob"),
            ("approval.granted", "alice"),
            ("approval.used", "bob"),
        ]
        assert alice.verify_audit_trail().ok
    finally:
        bob.close()


def test_health_turns_critical_on_a_trail_that_does_not_verify(system: BackupSystem) -> None:
    from app.monitoring.health import get_health_status

    _fill(system, 3)

    def audit_issues() -> list[str]:
        health = get_health_status(system.context)
        assert health.checks["audit"]["ok"], health.checks["audit"]
        return [i.key for i in health.issues if i.condition == "audit_tampered" and i.severity == "critical"]

    assert audit_issues() == []
    _drop_triggers(system)
    with system.context.engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_log SET detail = '{\"n\": 99}' WHERE id = (SELECT min(id) FROM audit_log)")
        )
    assert audit_issues() == ["audit_tampered:trail"]
