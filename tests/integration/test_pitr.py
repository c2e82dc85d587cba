"""Point-in-time recovery against real PostgreSQL 15 clusters (docs/PITR.md): base backups taken while
pgbench writes, recovered with `dr recover` to a time, and checked row by row and with pg_amcheck."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import stat
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from app import clock
from app.backup.engine import run_backup
from app.catalog.db import transaction
from app.catalog.models import Backup, WalSegment
from app.catalog.sources import get_source
from app.errors import RecoveryError
from app.pitr.manager import DisasterRecoveryManager
from tests.support.pgarchive import SOURCE, Archive, point_source_at, write_fetch_script
from tests.support.pgcluster import (
    PG_BIN,
    PgCluster,
    RecoveryArea,
    chown_to_postgres,
    free_port,
    run_as_postgres,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(archive: Archive, pg_template: Path) -> Iterator[PgCluster]:
    with PgCluster.create(pg_template, archive.env, checkpoint_timeout="'300s'") as started:
        point_source_at(archive, started.port)
        yield started


def pgbench(cluster: PgCluster, *args: str) -> list[str]:
    return [
        "runuser", "-u", "postgres", "--", str(PG_BIN / "pgbench"), "-h", "127.0.0.1",
        "-p", str(cluster.port), "-U", "postgres", *args, "postgres",
    ]  # fmt: skip


def commit_mark(cluster: PgCluster, note: str) -> datetime:
    """Insert one row in its own transaction; the commit's time (the server's clock)."""
    rows = cluster.sql("INSERT INTO marks (note) VALUES (%s) RETURNING clock_timestamp()", note)
    return clock.as_utc(rows[0][0])


def amcheck(port: int) -> subprocess.CompletedProcess[str]:
    return run_as_postgres(
        str(PG_BIN / "pg_amcheck"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "--all",
        "--heapallindexed", "--install-missing", check=False, timeout=120,
    )  # fmt: skip


def test_recovery_to_a_time_after_a_backup_taken_under_pgbench(
    archive: Archive, cluster: PgCluster, recovery_area: RecoveryArea
) -> None:
    space = cluster.base / "space1"
    space.mkdir()
    chown_to_postgres(space)
    cluster.sql(f"CREATE TABLESPACE space1 LOCATION '{space}'")
    cluster.sql("CREATE TABLE marks (id serial PRIMARY KEY, note text) TABLESPACE space1")
    run_as_postgres(*pgbench(cluster, "-i", "-s", "2", "-q")[4:], timeout=120)
    load = subprocess.Popen(
        pgbench(cluster, "-T", "5", "-c", "2", "-n"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        time.sleep(1)
        began = time.monotonic()
        backup = run_backup(archive.ctx, SOURCE, "full")
        backup_seconds = time.monotonic() - began
    finally:
        _, errors = load.communicate(timeout=60)
    assert load.returncode == 0, errors
    assert backup.state == "complete"
    manifest = archive.ctx.repository.read_manifest(backup.id)
    paths = {e["path"] for e in manifest["entries"]}
    assert {"backup_label", "tablespace_map", "global/pg_control"} <= paths
    assert any(p.startswith("pg_tblspc/") and "/PG_15_" in p for p in paths)
    assert "postmaster.pid" not in paths and not any(p.startswith("pg_wal/0") for p in paths)

    before = commit_mark(cluster, "before")
    time.sleep(1.1)
    target = clock.now()
    time.sleep(1.1)
    after = commit_mark(cluster, "after")
    balance = cluster.sql("SELECT sum(delta), count(*) FROM pgbench_history")[0]
    cluster.wait_archived(cluster.switch_wal())

    port = free_port()
    with DisasterRecoveryManager(context=archive.ctx, source=SOURCE) as manager:
        result = manager.execute_point_in_time_recovery(
            target,
            target_dir=recovery_area.new_dir(),
            start=True,
            port=port,
            restore_command=write_fetch_script(recovery_area.base / "fetch.sh"),
            timeout=60,
        )
    assert result.success, f"{result.message}\n{result.problems}"
    notes = [r[0] for r in recovery_area.sql(port, "SELECT note FROM marks ORDER BY id")]
    assert notes == ["before"]
    assert recovery_area.sql(port, "SELECT sum(delta), count(*) FROM pgbench_history")[0] == balance
    assert result.restored_timestamp is not None and before <= result.restored_timestamp <= target < after
    assert recovery_area.sql(port, "SELECT pg_is_in_recovery()")[0][0] is False
    check = amcheck(port)
    assert check.returncode == 0, check.stdout + check.stderr
    print(f"backup {backup_seconds:.1f} s, RTO {result.rto_seconds:.1f} s, plan {result.plan.to_json()}")


def test_unreachable_targets_damaged_wal_and_busy_directories_are_refused(
    archive: Archive, cluster: PgCluster, recovery_area: RecoveryArea
) -> None:
    cluster.sql("CREATE TABLE marks (id serial PRIMARY KEY, note text)")
    backup = run_backup(archive.ctx, SOURCE, "full")
    segments = []
    for note in ("a", "b", "c", "d"):
        commit_mark(cluster, note)
        segments.append(cluster.switch_wal())
        time.sleep(1.1)
    cluster.wait_archived(*segments)
    seg_a, seg_b, seg_c, seg_d = segments
    written = {name: clock.as_utc(archive.row(name).written_at) for name in segments}  # type: ignore[union-attr]
    manager = DisasterRecoveryManager(context=archive.ctx, source=SOURCE)
    fresh = recovery_area.new_dir()

    def refused(target: object, **kwargs: object) -> str:
        with pytest.raises(RecoveryError) as caught:
            manager.execute_point_in_time_recovery(target, target_dir=fresh, **kwargs)  # type: ignore[arg-type]
        assert not fresh.exists(), "a refused recovery wrote into its target"
        return caught.value.message

    with archive.ctx.sessions() as session:
        started = clock.as_utc(session.get(Backup, backup.id).started_at)  # type: ignore[union-attr]
    assert "before the end of the oldest base backup" in refused(started - timedelta(hours=1))
    assert "after the newest archived WAL" in refused(clock.now() + timedelta(hours=1))
    between_c_and_d = written[seg_c] + timedelta(milliseconds=500)

    busy = recovery_area.new_dir()
    busy.mkdir()
    (busy / "PG_VERSION").write_text("15\n")
    with pytest.raises(RecoveryError, match="is not empty"):
        manager.execute_point_in_time_recovery(between_c_and_d, target_dir=busy)
    with pytest.raises(RecoveryError, match=r"in use by a running PostgreSQL server \(pid \d+\)"):
        manager.execute_point_in_time_recovery(between_c_and_d, target_dir=cluster.data)

    # A segment missing from storage (its catalog row remains), then one corrupt: the dry run names each,
    # and the recovery refuses to start.
    target_iso = clock.iso(between_c_and_d)
    assert target_iso is not None
    for name, damage in ((seg_c, "missing"), (seg_d, "corrupt")):
        stored = archive.object_path(name)
        original = stored.read_bytes()
        if damage == "missing":
            stored.unlink()
        else:
            blob = bytearray(original)
            blob[len(blob) // 2] ^= 0x01
            stored.write_bytes(blob)
        dry = archive.cli(
            "dr", "recover", "--source", SOURCE, "--timestamp", target_iso, "--target", str(fresh), "--dry-run",
            ok=False,
        )  # fmt: skip
        assert dry.returncode == 15, dry.stdout + dry.stderr
        assert name in dry.stderr and damage in dry.stderr and "would be refused" in dry.stdout
        assert f"base backup {backup.id}" in dry.stdout
        message = refused(between_c_and_d)
        assert "recovery refused" in message and name in message
        stored.write_bytes(original)
        chown_to_postgres(stored)

    ok = archive.cli(
        "dr",
        "recover",
        "--source",
        SOURCE,
        "--timestamp",
        target_iso,
        "--target",
        str(fresh),
        "--dry-run",
        "--json",
    )
    plan = json.loads(ok.stdout)
    assert (
        plan["success"]
        and plan["plan"]["last_segment"] == seg_d
        and plan["plan"]["backup"]["id"] == backup.id
    )

    # Without --start: restored and configured, owned by postgres, mode 0700, for the operator to start.
    restored = manager.execute_point_in_time_recovery(between_c_and_d, target_dir=fresh)
    assert restored.success and not restored.started
    assert (fresh / "recovery.signal").exists() and (fresh / "backup_label").exists()
    assert not (fresh / "postmaster.pid").exists()
    settings = (fresh / "postgresql.auto.conf").read_text()
    assert f"recovery_target_time = '{between_c_and_d.strftime('%Y-%m-%d %H:%M:%S.%f')}+00'" in settings
    assert (
        "archive_mode = 'off'" in settings
        and "restore_command = 'equisplit-dr wal fetch %f %p --source db1'" in settings
    )
    status = fresh.stat()
    assert stat.S_IMODE(status.st_mode) == 0o700 and pwd.getpwuid(status.st_uid).pw_name == "postgres"
    fresh = recovery_area.new_dir()

    # A hole in the archive (catalog and storage): a target in it or past it is refused, naming it.
    archive.object_path(seg_b).unlink()
    with archive.ctx.sessions() as session, session.begin():
        session.delete(session.get(WalSegment, (1, seg_b)))
    message = refused(written[seg_a] + timedelta(milliseconds=500))
    assert "lies in a WAL gap" in message and f"segments {seg_b} to {seg_b}" in message
    assert "lies in a WAL gap" in refused(between_c_and_d)
    assert "gap" in refused(None, latest=True)


def test_recovery_follows_the_timeline_a_promotion_began(
    archive: Archive, cluster: PgCluster, recovery_area: RecoveryArea
) -> None:
    cluster.sql("CREATE TABLE marks (id serial PRIMARY KEY, note text)")
    made = archive.cli("backup", "run", "--source", SOURCE, "--type", "full", "--json")
    assert json.loads(made.stdout)["state"] == "complete"
    commit_mark(cluster, "timeline 1")
    cluster.wait_archived(cluster.switch_wal())

    # The source cluster itself fails over: restarted as a standby of its own archive, then promoted.
    cluster.stop("fast")
    (cluster.data / "standby.signal").touch()
    with open(cluster.data / "postgresql.conf", "a") as conf:
        conf.write(f"restore_command = '{cluster.restore_script} %f %p'\n")
    chown_to_postgres(cluster.data)
    cluster.start()
    run_as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(cluster.data), "-w", "promote")
    assert cluster.sql("SELECT pg_is_in_recovery()")[0][0] is False
    commit_mark(cluster, "timeline 2")
    time.sleep(1.1)
    target = clock.iso(clock.now())
    time.sleep(1.1)
    commit_mark(cluster, "too late")
    cluster.wait_archived("00000002.history", cluster.switch_wal())

    port = free_port()
    fetch = write_fetch_script(recovery_area.base / "fetch.sh")
    target_dir = recovery_area.new_dir()
    proc = archive.cli(
        "dr", "recover", "--source", SOURCE, "--timestamp", str(target), "--target", str(target_dir),
        "--start", "--port", str(port), "--restore-command", fetch, "--json", ok=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["success"] and result["plan"]["timeline"] == 2
    assert [t["timeline"] for t in result["plan"]["timelines"]] == [1, 2]
    assert result["plan"]["history_files"] == ["00000002.history"]
    assert result["timeline"] == 3  # the recovered copy's own promotion
    assert result["rto_seconds"] > 0 and result["restored_timestamp"] <= target
    notes = [r[0] for r in recovery_area.sql(port, "SELECT note FROM marks ORDER BY id")]
    assert notes == ["timeline 1", "timeline 2"]
    # The drill archives nothing: the source's archive knows no timeline 3.
    assert recovery_area.sql(port, "SHOW archive_mode")[0][0] == "off"
    assert archive.row("00000003.history") is None


RECORD_SCRIPT = """#!/bin/sh
# Record the command line of this process and of each ancestor up to the test, then run {real}.
p=$$
while [ "$p" -gt 1 ] && [ "$p" != {stop} ]; do
  tr '\\0' ' ' < /proc/$p/cmdline >> {log}; echo >> {log}
  p=$(awk '/^PPid:/ {{print $2}}' /proc/$p/status)
done
exec {real} "$@"
"""


def recording(path: Path, real: str, log: Path) -> Path:
    """A script at `path` that logs its own and its ancestors' command lines into `log`, then execs `real`."""
    path.write_text(RECORD_SCRIPT.format(real=real, log=log, stop=os.getpid()))
    path.chmod(0o755)
    return path


def test_the_started_server_shows_no_secret_and_is_watched_as_the_dsn_user(
    archive: Archive, cluster: PgCluster, recovery_area: RecoveryArea, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The master key and AWS credentials reach restore_command through the environment, never a command
    line any user can read in `ps`; and recovery is watched as the source DSN's role (here `dba`: the
    cluster has no role named after the OS user `postgres`), failing at once for a role it lacks."""
    key = archive.ctx.settings.default_key_file.read_text().strip()
    aws_secret = secrets.token_hex(20)
    monkeypatch.setenv("BACKUP_ENCRYPTION_KEY", key)  # the environment `dr recover` runs in
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws_secret)
    cluster.sql("CREATE ROLE dba SUPERUSER LOGIN")
    with transaction(archive.ctx.sessions) as session:
        get_source(session, SOURCE).options = {
            "dsn": f"host=127.0.0.1 port={cluster.port} user=dba dbname=postgres connect_timeout=10"
        }
    cluster.sql("CREATE TABLE marks (id serial PRIMARY KEY, note text)")
    backup = run_backup(archive.ctx, SOURCE, "full")
    assert backup.state == "complete"
    with psycopg.connect(
        host="127.0.0.1", port=cluster.port, user="dba", dbname="postgres", autocommit=True
    ) as dba:
        dba.execute(b"ALTER ROLE postgres RENAME TO bootstrap")  # no role `postgres` from here on
        dba.execute(b"INSERT INTO marks (note) VALUES ('after the rename')")
        row = dba.execute(b"SELECT pg_walfile_name(pg_switch_wal())").fetchone()
    assert row is not None
    cluster.wait_archived(str(row[0]))

    log = recovery_area.base / "cmdlines"
    log.touch()
    bin_dir = recovery_area.base / "bin"
    bin_dir.mkdir()
    recording(bin_dir / "pg_ctl", str(PG_BIN / "pg_ctl"), log)
    (bin_dir / "psql").symlink_to(PG_BIN / "psql")
    fetch = write_fetch_script(recovery_area.base / "fetch.sh").split()[0]
    restore = recording(recovery_area.base / "restore.sh", fetch, log)
    chown_to_postgres(recovery_area.base)
    archive.ctx.settings = archive.ctx.settings.model_copy(update={"pg_bin_dir": bin_dir})

    with DisasterRecoveryManager(context=archive.ctx, source=SOURCE) as manager:
        port = free_port()
        result = manager.execute_point_in_time_recovery(
            latest=True,
            target_dir=recovery_area.new_dir(),
            start=True,
            port=port,
            restore_command=f"{restore} %f %p",
            timeout=120,
        )
        assert result.success, f"{result.message}\n{result.problems}"
        assert result.rto_seconds is not None and result.rto_seconds >= result.recovery_seconds
        with psycopg.connect(host="127.0.0.1", port=port, user="dba", dbname="postgres") as conn:
            assert conn.execute(b"SELECT note FROM marks").fetchall() == [("after the rename",)]

        lines = log.read_text().splitlines()
        assert any("runuser" in line and "pg_ctl" in line for line in lines), lines  # the check has teeth
        assert any("restore.sh" in line for line in lines), lines  # restore_command calls, recorded
        assert any("postgres: startup" in line for line in lines), lines  # the server, their ancestor
        showing = [number for number, line in enumerate(lines) if key in line or aws_secret in line]
        assert not showing, f"the master key or an AWS secret in command lines {showing} of {log}"
        auto_conf = (result.target_dir / "postgresql.auto.conf").read_text()
        assert key not in auto_conf and aws_secret not in auto_conf

        # A role the recovered cluster lacks: refused at once, naming it, with the server log's last lines.
        failed = manager.execute_point_in_time_recovery(
            latest=True,
            target_dir=recovery_area.new_dir(),
            start=True,
            port=free_port(),
            restore_command=f"{restore} %f %p",
            timeout=600,
            user="nosuch",
        )
    assert not failed.success and 'role "nosuch" does not exist' in failed.message, failed.message
    assert failed.rto_seconds is None
    assert any('role "nosuch" does not exist' in problem for problem in failed.problems), failed.problems
