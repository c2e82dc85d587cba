"""Audit anchors are replicated (docs/REPLICATION.md section 2, docs/AUDIT.md section 3): with the primary
gone, `audit verify --from-region` still detects a truncated trail and `catalog rebuild --from-region`
brings the anchored entries back into a lost catalog."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select, text

from app.catalog import audit
from app.catalog.db import make_engine, transaction
from app.catalog.models import AuditEntry
from app.replication.run import replicate
from app.system import BackupSystem
from tests.support.cli import cli_env_for, run_cli
from tests.support.system import Factory

REGION = "us-west-2"


def _fill(system: BackupSystem, n: int) -> None:
    with transaction(system.context.sessions) as session:
        for i in range(n):
            audit.append(session, "test.event", f"object {i}", {"n": i}, "tester")


def _hashes(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(select(AuditEntry.hash).order_by(AuditEntry.id)))
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_region_detects_truncation_and_brings_the_trail_back_without_the_primary(
    make_system: Factory, tmp_path: Path, fresh_pg_url: str
) -> None:
    system = make_system(catalog=fresh_pg_url)
    _fill(system, 4)
    system.anchor_audit_trail()
    _fill(system, 3)
    system.anchor_audit_trail()
    [done] = replicate(system.context)
    assert done.error is None
    home = system.settings.home
    primary, region = home / "repo" / "audit", home / "regions" / REGION / "audit"
    names = sorted(p.name for p in primary.rglob("anchor-*"))
    assert len(names) == 2
    assert {p.name: p.read_bytes() for p in region.rglob("anchor-*")} == {
        p.name: p.read_bytes() for p in primary.rglob("anchor-*")
    }
    anchored = _hashes(fresh_pg_url)
    key = system.settings.backup_encryption_key
    assert key is not None
    system.close()
    shutil.rmtree(home / "repo")  # the primary is gone

    env = {**cli_env_for(home, database_url=fresh_pg_url), "BACKUP_ENCRYPTION_KEY": key.get_secret_value()}
    engine = make_engine(fresh_pg_url)
    try:
        with engine.begin() as conn:  # truncate the tail: the chain alone still verifies
            conn.execute(text("DROP TRIGGER audit_log_append_only ON audit_log"))
            conn.execute(text("DELETE FROM audit_log WHERE id > 3"))
    finally:
        engine.dispose()
    truncated = run_cli(env, "audit", "verify", "--from-region", REGION, "--json")
    assert truncated.returncode == 18, truncated.stdout + truncated.stderr
    assert json.loads(truncated.stdout)["problem"]["kind"] == "truncated"

    engine = make_engine(fresh_pg_url)  # the catalog is lost as well
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()
    rebuilt = run_cli(env, "catalog", "rebuild", "--from-region", REGION, "--json", ok=True)
    assert json.loads(rebuilt.stdout)["audit"]["restored"] == len(anchored)
    assert _hashes(fresh_pg_url)[: len(anchored)] == anchored
    ok = run_cli(env, "audit", "verify", "--from-region", REGION, ok=True)
    assert "audit trail verified" in ok.stdout
    assert not (home / "repo").exists()  # nothing read from (or written to) the primary
