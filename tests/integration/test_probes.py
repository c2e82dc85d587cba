"""The runbook's first checks (`backup test-connection`, `backup storage-status`) on real backends: every
probe says what it reached, a broken one says what failed; storage status counts what storage holds."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from app.repo.format import Kind
from app.system import BackupSystem
from tests.support.cli import cli_env_for, run_cli
from tests.support.cluster import RedisServer, redis_server  # noqa: F401
from tests.support.pg import server_url
from tests.support.system import Factory
from tests.support.trees import make_tree


@pytest.mark.postgres
def test_every_probe_reaches_its_service(
    system_any_backend: BackupSystem, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    system = system_any_backend
    broker: RedisServer = request.getfixturevalue("redis_server")
    system.settings.celery_broker_url = broker.url
    dsn = server_url().set(drivername="postgresql").render_as_string(hide_password=False)
    system.add_postgres_source("appdb", dsn)
    probes = {p.name: p for p in system.test_connection()}
    assert set(probes) == {"storage", "catalog", "keys", "broker", "postgres:appdb"}
    for name in ("storage", "catalog", "keys", "broker"):
        assert probes[name].ok, probes[name]
    assert system.context.storage.location in probes["storage"].detail
    assert "PING" in probes["broker"].detail
    # the test server does not archive: the probe says so, which is what an operator must hear
    pg = probes["postgres:appdb"]
    assert "PostgreSQL 15" in pg.detail and (pg.ok or "archive_mode is off" in pg.detail)
    assert list(system.context.storage.list("locks")) == []  # the probe object is gone


def test_unwritable_storage_and_a_dead_broker_fail_with_the_reason(make_system: Factory) -> None:
    system = make_system()
    system.settings.celery_broker_url = "redis://127.0.0.1:9/0"  # the discard port: nothing listens
    locks = system.settings.home / "repo" / "locks"
    locks.mkdir(exist_ok=True)
    locks.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.geteuid() == 0:  # root writes anyway: make the directory a file instead
            locks.chmod(0o700)
            locks.rmdir()
            locks.write_text("not a directory")
        probes = {p.name: p for p in system.test_connection()}
    finally:
        if locks.is_dir():
            locks.chmod(0o700)
    assert probes["storage"].ok is False and "locks" in probes["storage"].detail
    assert probes["broker"].ok is False and "Connection" in probes["broker"].detail
    assert probes["catalog"].ok and probes["keys"].ok


def test_storage_status_counts_what_storage_holds(system_any_backend: BackupSystem, tmp_path: Path) -> None:
    system = system_any_backend
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=2, small=5))
    system.create_full_backup("docs")
    status = system.storage_status()
    packs = list(system.context.storage.list(Kind.PACKS))
    assert status["kinds"]["packs"] == {"objects": len(packs), "bytes": sum(p.size for p in packs)}
    assert status["kinds"]["manifests"]["objects"] == 1 and status["kinds"]["keys"]["objects"] == 1
    assert (
        status["catalog"]["backups"] == 1
        and status["catalog"]["pack_bytes"] == status["kinds"]["packs"]["bytes"]
    )
    assert sum(c["bytes"] for c in status["storage_classes"].values()) == status["bytes"]
    if system.context.storage.location.startswith("s3://"):
        assert status["free_bytes"] is None
    else:
        assert status["free_bytes"] > 0 and 0 < status["used_percent"] < 100


def test_cli_test_connection_and_storage_status(tmp_path: Path) -> None:
    env = cli_env_for(tmp_path / "home")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(env, *args)

    assert cli("init").returncode == 0
    ok = cli("backup", "test-connection")
    assert ok.returncode == 0 and "storage" in ok.stdout and "embedded mode" in ok.stdout, (
        ok.stdout + ok.stderr
    )
    doc = json.loads(cli("backup", "storage-status", "--json").stdout)
    assert doc["kinds"]["keys"]["objects"] == 1 and doc["free_bytes"] > 0
    env["BACKUP_STORAGE_URL"] = (tmp_path / "elsewhere").as_uri()  # no repository there
    bad = cli("backup", "test-connection", "--json")
    assert bad.returncode == 1
    keys = next(p for p in json.loads(bad.stdout) if p["name"] == "keys")
    assert keys["ok"] is False and "no repository" in keys["detail"]
