"""PostgreSQL base backups against real PostgreSQL 15 clusters (docs/POSTGRES.md): what a backup holds,
incremental and differential backups that restore to the same data as a full one, and a backup whose
session is lost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.backup.engine import run_backup
from app.backup.postgres import PostgresHooks
from app.catalog.models import Backup
from app.errors import BackupFailedError, SourceError
from app.pitr.manager import DisasterRecoveryManager
from tests.support.pgarchive import SOURCE, Archive, point_source_at, write_fetch_script
from tests.support.pgcluster import PG_BIN, PgCluster, RecoveryArea, run_as_postgres
from tests.support.ports import free_port

pytestmark = pytest.mark.slow

FINGERPRINT = (
    "SELECT (SELECT md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts), "
    "(SELECT md5(string_agg(tid || ':' || tbalance, ',' ORDER BY tid)) FROM pgbench_tellers), "
    "(SELECT count(*) FROM pgbench_history), (SELECT count(*) FROM extra)"
)


@pytest.fixture
def cluster(archive: Archive, pg_template: Path) -> Iterator[PgCluster]:
    with PgCluster.create(pg_template, archive.env) as started:
        point_source_at(archive, started.port)
        yield started


def pgbench(cluster: PgCluster, *args: str) -> None:
    run_as_postgres(
        str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", *args, "postgres",
        timeout=120,
    )  # fmt: skip


def test_incremental_and_differential_read_less_and_recover_to_the_same_data_as_a_full(
    archive: Archive, cluster: PgCluster, recovery_area: RecoveryArea
) -> None:
    pgbench(cluster, "-i", "-s", "2", "-q")
    cluster.sql("CREATE TABLE extra (n int)")
    cluster.sql("CHECKPOINT")
    time.sleep(2.1)  # the files are now older than the change rule's 2 s guard before the full's start
    full = run_backup(archive.ctx, SOURCE, "full")
    pgbench(cluster, "-t", "100", "-c", "2", "-n")
    cluster.sql("INSERT INTO extra SELECT generate_series(1, 1000)")
    incremental = run_backup(archive.ctx, SOURCE, "incremental")
    pgbench(cluster, "-t", "50", "-n")
    differential = run_backup(archive.ctx, SOURCE, "differential")
    checksum = run_backup(archive.ctx, SOURCE, "incremental", checksum=True)
    for result, parent in ((incremental, full.id), (differential, full.id), (checksum, differential.id)):
        assert result.state == "complete" and result.parent_id == parent, result
    # Only changed files are read; the checksum mode reads every one but stores little.
    assert full.stats["files_read"] == full.stats["files"]
    for result in (incremental, differential):
        # pgbench's updates touch the whole of pgbench_accounts: that file is read again, not the rest.
        assert result.stats["files_read"] < full.stats["files"] // 10, result.stats
        assert result.stats["bytes_read"] < full.stats["bytes_read"] * 0.7, result.stats
    assert differential.stats["files_read"] >= incremental.stats["files_read"]
    assert checksum.stats["files_read"] == checksum.stats["files"]
    assert checksum.stats["bytes_new"] < checksum.stats["bytes_read"] // 4
    cluster.sql("SELECT pg_create_restore_point('compare')")
    expected = cluster.sql(FINGERPRINT)[0]
    cluster.wait_archived(cluster.switch_wal())

    fetch = write_fetch_script(recovery_area.base / "fetch.sh")
    with DisasterRecoveryManager(context=archive.ctx, source=SOURCE) as manager:
        for backup in (incremental, differential):  # the full's own recovery: test_pitr.py
            port = free_port()
            target = recovery_area.new_dir()
            result = manager.execute_point_in_time_recovery(
                name="compare", backup_id=backup.id, target_dir=target, start=True, port=port,
                restore_command=fetch, timeout=60,
            )  # fmt: skip
            assert result.success, f"{backup.type}: {result.message}\n{result.problems}"
            assert result.plan.backup.id == backup.id
            assert recovery_area.sql(port, FINGERPRINT)[0] == expected, backup.type
            run_as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(target), "-m", "fast", "-w", "stop")


def test_a_lost_session_fails_the_backup_and_the_next_one_succeeds(
    archive: Archive, cluster: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    walk = PostgresHooks.walk

    def cut_connection(self: PostgresHooks, ctx: Any, *rest: Any) -> Any:
        cluster.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'equisplit-dr backup'"
        )
        return walk(self, ctx, *rest)

    def restart_server(self: PostgresHooks, ctx: Any, *rest: Any) -> Any:
        cluster.stop("fast")
        cluster.start()
        return walk(self, ctx, *rest)

    for interruption in (cut_connection, restart_server):
        monkeypatch.setattr(PostgresHooks, "walk", interruption)
        with pytest.raises(BackupFailedError, match=r"session holding backup .* was lost"):
            run_backup(archive.ctx, SOURCE, "full")
        monkeypatch.setattr(PostgresHooks, "walk", walk)
        with archive.ctx.sessions() as session:
            states = [b.state for b in session.query(Backup).order_by(Backup.started_at)]
        assert states[-1] == "failed"
        assert not cluster.sql(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'equisplit-dr backup'"
        )
    # Nothing is left in backup mode: a new backup starts, stops and completes.
    again = run_backup(archive.ctx, SOURCE, "full")
    assert again.state == "complete"
    # A cluster that does not archive is refused before anything is read.
    cluster.configure(archive_command="''")
    with pytest.raises(SourceError, match="does not archive its WAL"):
        run_backup(archive.ctx, SOURCE, "full")


def test_a_backup_whose_wal_is_not_archived_fails_naming_the_segment_and_completes_once_it_is(
    archive: Archive, cluster: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pg_backup_stop does not wait for PostgreSQL's archiver: the backup's own wait for the WAL in the
    # catalog is what keeps a backup whose WAL never reached storage from completing.
    monkeypatch.setattr(archive.ctx.settings, "backup_pg_archive_timeout", 3)
    archiving = cluster.sql("SHOW archive_command")[0][0]
    cluster.configure(archive_command="'/bin/false'")
    with pytest.raises(BackupFailedError, match=r"WAL segment [0-9A-F]{24}.* is not in the archive"):
        run_backup(archive.ctx, SOURCE, "full")
    with archive.ctx.sessions() as session:
        assert [b.state for b in session.query(Backup)] == ["failed"]
    assert not cluster.sql("SELECT pid FROM pg_stat_activity WHERE application_name = 'equisplit-dr backup'")
    monkeypatch.undo()
    cluster.configure(archive_command="'" + archiving.replace("'", "''") + "'")  # archiving resumes
    again = run_backup(archive.ctx, SOURCE, "full")
    assert again.state == "complete"
