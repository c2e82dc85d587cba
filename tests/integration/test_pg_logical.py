"""Logical exports (pg_dump) of one database and their import into an empty one, against the local
PostgreSQL (docs/POSTGRES.md section 5): equal tables after the round trip, dedup of an unchanged
export, a refused non-empty target, a missing database, missing and corrupt packs, the CLI."""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import select

from app.catalog.models import AuditEntry, Chunk, Job
from app.errors import IntegrityError, ObjectNotFoundError, RestoreTargetError, SourceError
from app.system import BackupSystem
from tests.support.pg import server_url

pytestmark = pytest.mark.postgres

SOURCE = "appdb"
ROWS = 3000
BLOB = 2048  # random bytes per row: ~6 MiB of bytea, ~12 MiB of dump (hex)
PASSWORD = "hunter2-" + secrets.token_hex(4)  # trust auth ignores it; it must show up nowhere

Databases = Callable[[], str]


@pytest.fixture
def databases() -> Iterator[Databases]:
    """A factory of new empty databases (their libpq DSNs), all dropped after the test."""
    server = server_url()
    made: list[str] = []
    admin = psycopg.connect(server.set(drivername="postgresql").render_as_string(False), autocommit=True)

    def make() -> str:
        name = f"eqdr_logical_{secrets.token_hex(5)}"
        admin.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return server.set(drivername="postgresql", database=name).render_as_string(False)

    yield make
    for name in made:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def sql(dsn: str, query: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params or None)
        return cur.fetchall() if cur.description else []


def seed(dsn: str, seed: int = 7) -> None:
    """Tables with random bytea, numbers, text with NULLs and non-ASCII, a view, an index, a sequence."""
    rng = random.Random(seed)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA sales")
        conn.execute("CREATE TABLE sales.docs (id int PRIMARY KEY, title text, body bytea NOT NULL)")
        with conn.cursor().copy("COPY sales.docs (id, title, body) FROM STDIN") as copy:
            for i in range(ROWS):
                title = None if i % 17 == 0 else f"doc {i} ünïcode ✓ {rng.random():.6f}"
                copy.write_row((i, title, rng.randbytes(BLOB)))
        conn.execute(
            "CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz, kind text, amount numeric(12, 2))"
        )
        conn.execute(
            "INSERT INTO events (at, kind, amount) SELECT timestamptz '2026-01-01' + g * interval '1 min', "
            "'kind-' || (g % 7), (g * 37 % 100000) / 100.0 FROM generate_series(1, 5000) g"
        )
        conn.execute("CREATE INDEX events_kind ON events (kind)")
        conn.execute("CREATE VIEW big_events AS SELECT * FROM events WHERE amount > 900")
        conn.execute("CREATE SEQUENCE invoice_no START 1000")
        conn.execute("SELECT nextval('invoice_no') FROM generate_series(1, 42)")


def fingerprint(dsn: str) -> dict[str, object]:
    """md5 of every table's ordered rows, row counts, the view, the sequence."""
    row = sql(
        dsn,
        "SELECT (SELECT count(*) FROM sales.docs),"
        " (SELECT md5(string_agg(d::text, ',' ORDER BY id)) FROM sales.docs d),"
        " (SELECT count(*) FROM events),"
        " (SELECT md5(string_agg(e::text, ',' ORDER BY id)) FROM events e),"
        " (SELECT count(*) FROM big_events),"
        " (SELECT last_value FROM invoice_no),"
        " (SELECT indexdef FROM pg_indexes WHERE indexname = 'events_kind')",
    )[0]
    return dict(
        zip(["docs", "docs_md5", "events", "events_md5", "view", "sequence", "index"], row, strict=True)
    )


def user_tables(dsn: str) -> list[tuple[object, ...]]:
    return sql(
        dsn,
        "SELECT schemaname, tablename FROM pg_tables"
        " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
    )


def with_password(dsn: str) -> str:
    return dsn.replace("postgres@", f"postgres:{PASSWORD}@", 1)


@pytest.fixture
def exported(system: BackupSystem, databases: Databases) -> tuple[BackupSystem, str, str]:
    """A seeded database registered as source `appdb`, and one logical export of it."""
    dsn = databases()
    seed(dsn)
    system.add_postgres_source(SOURCE, dsn)
    result = system.create_logical_export(SOURCE)
    assert result.state == "complete" and result.type == "logical", result
    return system, dsn, result.id


def test_an_export_imports_into_an_empty_database_with_equal_tables_and_dedups_when_unchanged(
    exported: tuple[BackupSystem, str, str], databases: Databases, tmp_path: Path
) -> None:
    system, source_dsn, backup_id = exported
    expected = fingerprint(source_dsn)
    assert expected["docs"] == ROWS and expected["events"] == 5000 and expected["sequence"] == 1041

    shown = system.show_backup(backup_id)
    meta = shown["logical"]
    database = source_dsn.rsplit("/", 1)[1]
    assert shown["type"] == "logical" and shown["state"] == "complete" and shown["files"] == 1
    assert meta["database"] == database and meta["format"] == "custom"
    assert meta["pg_dump_version"].startswith("15.") and meta["server_version"].startswith("15.")
    size = meta["size"]
    assert size == shown["bytes_total"] > ROWS * BLOB * 2  # bytea is dumped as hex
    assert 0 < shown["bytes_stored"] < size  # zstd halves the hex at least
    assert [b["id"] for b in system.list_backups(SOURCE)] == [backup_id]

    # Unchanged data: only the dump's header (its timestamp, in seconds) differs: one new chunk.
    time.sleep(1.1)
    again = system.create_logical_export(SOURCE, database)
    assert again.stats["bytes_total"] == size
    assert again.stats["chunks"] == shown["chunks"] > 4
    assert 1 <= again.stats["new_chunks"] <= 2, again.stats
    assert again.stats["bytes_new"] < size // 4, again.stats
    # A few changed rows: a few new chunks, not a new copy.
    sql(source_dsn, "UPDATE events SET kind = 'changed' WHERE id % 1000 = 0")
    changed = fingerprint(source_dsn)
    third = system.create_logical_export(SOURCE, database)
    assert third.stats["new_chunks"] <= 3 and third.stats["bytes_new"] < size // 4, third.stats

    target = databases()
    report = system.restore_logical_export(backup_id, with_password(target))
    assert report.bytes == size and report.target_database == target.rsplit("/", 1)[1]
    assert fingerprint(target) == expected
    assert sorted(user_tables(target)) == sorted(user_tables(source_dsn))

    latest_target = databases()
    assert system.restore_logical_export("latest", latest_target, source=SOURCE).backup_id == third.id
    assert fingerprint(latest_target) == changed != expected

    # The ledger: one backup job and one restore job each, audited, and no password anywhere.
    with system.context.sessions() as session:
        kinds = sorted((j.kind, j.state) for j in session.scalars(select(Job)))
        audit = [(a.action, json.dumps(a.detail)) for a in session.scalars(select(AuditEntry))]
    assert kinds == [("backup", "succeeded")] * 3 + [("restore", "succeeded")] * 2
    assert [a for a, _ in audit].count("backup.created") == 3
    assert [a for a, _ in audit].count("restore.completed") == 2
    assert all(PASSWORD not in detail for _, detail in audit)

    # Restored as files, the export is the dump itself, which pg_restore reads.
    system.restore(backup_id, tmp_path / "out")
    dump = tmp_path / "out" / f"{database}.dump"
    assert dump.stat().st_size == size
    listing = subprocess.run(
        ["/usr/lib/postgresql/15/bin/pg_restore", "--list", str(dump)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "TABLE DATA sales docs" in listing

    # Storage alone rebuilds the catalog: the export is listed again and still imports.
    system.rebuild_catalog()
    rows = {b["id"]: b for b in system.list_backups(SOURCE)}
    assert rows[backup_id]["type"] == "logical" and rows[backup_id]["bytes_total"] == size
    rebuilt_target = databases()
    system.restore_logical_export(backup_id, rebuilt_target)
    assert fingerprint(rebuilt_target) == expected


def test_a_non_empty_target_is_refused_and_left_untouched(
    exported: tuple[BackupSystem, str, str], databases: Databases
) -> None:
    system, _source_dsn, backup_id = exported
    target = databases()
    sql(target, "CREATE TABLE keep_me (n int)")
    sql(target, "INSERT INTO keep_me SELECT generate_series(1, 10)")
    name = target.rsplit("/", 1)[1]
    with pytest.raises(RestoreTargetError) as caught:
        system.restore_logical_export(backup_id, with_password(target))
    text = str(caught.value)
    assert f"target database {name} is not empty" in text and "public.keep_me" in text
    assert "CREATE DATABASE" in text and PASSWORD not in text
    assert user_tables(target) == [("public", "keep_me")]
    assert sql(target, "SELECT count(*) FROM keep_me") == [(10,)]
    with system.context.sessions() as session:  # refused before any job started
        assert [j.kind for j in session.scalars(select(Job))] == ["backup"]


def test_a_missing_database_fails_the_export_naming_it_and_leaves_no_complete_backup(
    system: BackupSystem, databases: Databases
) -> None:
    system.add_postgres_source(SOURCE, databases())
    with pytest.raises(SourceError, match="database 'no_such_db' does not exist") as caught:
        system.create_logical_export(SOURCE, "no_such_db")
    assert "psql -l" in str(caught.value)
    (row,) = system.list_backups(SOURCE)
    assert row["type"] == "logical" and row["state"] == "failed"
    assert "no_such_db" in row["error"]
    with system.context.sessions() as session:
        (job,) = session.scalars(select(Job))
        assert job.state == "failed"
        actions = [a.action for a in session.scalars(select(AuditEntry))]
    assert "backup.failed" in actions and "backup.created" not in actions
    assert system.context.repository.list_manifests() == []
    # A file-tree source has no database to export.
    system.add_source("docs", Path(__file__).parent)
    with pytest.raises(SourceError, match="logical exports are of PostgreSQL sources"):
        system.create_logical_export("docs")


def _dump_packs(system: BackupSystem, backup_id: str) -> list[tuple[str, int, int]]:
    """(pack, offset, length) of the export's chunks, in dump order."""
    ids = system.context.repository.read_manifest(backup_id)["entries"][0]["chunks"]
    with system.context.sessions() as session:
        rows = {c.id: c for c in session.scalars(select(Chunk).where(Chunk.id.in_(ids)))}
    return [(rows[c].pack_id, rows[c].offset, rows[c].length) for c in ids]


def test_a_missing_or_corrupt_pack_stops_the_import_naming_it_and_leaves_the_target_empty(
    exported: tuple[BackupSystem, str, str], databases: Databases
) -> None:
    system, _source_dsn, backup_id = exported
    storage = system.context.storage
    located = _dump_packs(system, backup_id)
    # Corrupt the last chunk: pg_restore has run most of its statements when the damage is met.
    pack, offset, length = located[-1]
    data = bytearray(storage.get("packs", pack))
    data[offset + length // 2] ^= 0x01
    storage.delete("packs", pack)
    storage.put("packs", pack, bytes(data))
    target = databases()
    with pytest.raises(IntegrityError, match=f"in pack {pack} is corrupt"):
        system.restore_logical_export(backup_id, target)
    assert user_tables(target) == []  # its single transaction was rolled back

    storage.delete("packs", pack)
    with pytest.raises(ObjectNotFoundError, match=f"packs/{pack}"):
        system.restore_logical_export(backup_id, target)
    assert user_tables(target) == []
    with system.context.sessions() as session:
        states = [j.state for j in session.scalars(select(Job).where(Job.kind == "restore"))]
        failed = [a.detail for a in session.scalars(select(AuditEntry)) if a.action == "restore.failed"]
    assert states == ["failed"]  # the missing pack is found before a job starts
    assert pack in failed[0]["error"]


def test_the_cli_exports_and_imports_with_json_and_exit_codes(databases: Databases, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "DATABASE_URL", "EQUISPLIT"))}
    env.update(
        EQUISPLIT_DR_HOME=str(tmp_path / "home"),
        BACKUP_ENCRYPTION_KEY=secrets.token_hex(32),
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )

    def run(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "app.cli.main", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == code, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    source = databases()
    sql(source, "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g")
    run("init")
    run("source", "add", SOURCE, "--postgres", with_password(source))
    exported = json.loads(run("pg", "export", "--source", SOURCE, "--json").stdout)
    assert exported["type"] == "logical" and exported["state"] == "complete"
    assert exported["logical"]["database"] == source.rsplit("/", 1)[1]
    listed = json.loads(run("backup", "list", "--source", SOURCE, "--json").stdout)
    assert [b["type"] for b in listed] == ["logical"]

    target = databases()
    imported = json.loads(run("pg", "import", "latest", "--source", SOURCE, "--dsn", target, "--json").stdout)
    assert imported["backup"] == exported["id"] and imported["bytes"] == exported["bytes_total"]
    assert sql(target, "SELECT md5(string_agg(v, ',' ORDER BY id)) FROM t") == sql(
        source, "SELECT md5(string_agg(v, ',' ORDER BY id)) FROM t"
    )
    refused = run("pg", "import", exported["id"], "--dsn", with_password(target), code=11)
    assert "is not empty" in refused.stderr and PASSWORD not in refused.stderr + refused.stdout
    missing = run("pg", "export", "--source", SOURCE, "--database", "nope_db", code=8)
    assert "'nope_db' does not exist" in missing.stderr
    wrong_kind = run("pg", "import", "latest", "--source", "nobody", "--dsn", target, code=8)
    assert "no source named 'nobody'" in wrong_kind.stderr


def test_the_export_task_runs_eagerly_and_returns_ids(
    databases: Databases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EQUISPLIT_DR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BACKUP_ENCRYPTION_KEY", secrets.token_hex(32))
    monkeypatch.setattr("workers.base._context", None)  # this test's home, not an earlier test's
    from tasks.backup import export_database
    from workers import app

    source = databases()
    sql(source, "CREATE TABLE t AS SELECT generate_series(1, 100) AS id")
    with BackupSystem() as system:
        system.init()
        system.add_postgres_source(SOURCE, source)
    app.conf.task_always_eager = True
    try:
        result = export_database.apply(args=(SOURCE,)).get()
    finally:
        app.conf.task_always_eager = False
    assert result["type"] == "logical" and result["state"] == "complete"
    json.dumps(result)
    with BackupSystem() as system:
        assert system.show_backup(result["backup_id"])["logical"]["database"] == source.rsplit("/", 1)[1]
