"""Block-aligned chunks of relation files (docs/FORMAT.md section 4, "Block-aligned files") against a
real PostgreSQL 15 cluster: after pgbench's updates an incremental stores far fewer bytes than with
content-defined chunks, and it recovers to a restore point with the data of tables that were updated,
truncated at their end by VACUUM, extended, and created since the full backup."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.backup import postgres
from app.backup.engine import run_backup
from app.pitr.manager import DisasterRecoveryManager
from tests.support.pgarchive import SOURCE, Archive, point_source_at, write_fetch_script
from tests.support.pgcluster import PG_BIN, PgCluster, RecoveryArea, run_as_postgres
from tests.support.ports import free_port

pytestmark = pytest.mark.slow

FINGERPRINT = (
    "SELECT (SELECT md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts), "
    "(SELECT md5(string_agg(tid || ':' || tbalance, ',' ORDER BY tid)) FROM pgbench_tellers), "
    "(SELECT count(*) FROM pgbench_history), "
    "(SELECT count(*) || ':' || sum(n) FROM shrinks), (SELECT count(*) || ':' || sum(n) FROM grows), "
    "(SELECT count(*) || ':' || sum(n) FROM fresh), "
    "(SELECT pg_relation_size('shrinks') || ':' || pg_relation_size('grows'))"
)


@pytest.fixture
def cluster(archive: Archive, pg_template: Path) -> Iterator[PgCluster]:
    with PgCluster.create(pg_template, archive.env) as started:
        point_source_at(archive, started.port)
        started.configure(autovacuum="off")  # nothing but the test writes between the two incrementals
        yield started


def pgbench(cluster: PgCluster, *args: str) -> None:
    run_as_postgres(
        str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", *args, "postgres",
        timeout=120,
    )  # fmt: skip


def test_a_block_incremental_stores_only_changed_groups_and_recovers_every_kind_of_change(
    archive: Archive, cluster: PgCluster, recovery_area: RecoveryArea, monkeypatch: pytest.MonkeyPatch
) -> None:
    pgbench(cluster, "-i", "-s", "2", "-q")
    cluster.sql("CREATE TABLE shrinks AS SELECT g AS n, repeat('s', 400) AS pad FROM generate_series(1, 20000) g")
    cluster.sql("CREATE TABLE grows AS SELECT g AS n, repeat('g', 400) AS pad FROM generate_series(1, 2000) g")
    cluster.sql("VACUUM ANALYZE")
    cluster.sql("CHECKPOINT")
    time.sleep(2.1)  # older than the change rule's guard
    # Both schemes' fulls are in the repository: each incremental below dedups against its own.
    monkeypatch.setattr(postgres, "BLOCK_RULE", None)
    cdc_full = run_backup(archive.ctx, SOURCE, "full")
    monkeypatch.undo()
    block_full = run_backup(archive.ctx, SOURCE, "full")
    assert cdc_full.state == block_full.state == "complete"

    pgbench(cluster, "-t", "30", "-c", "2", "-n")  # a few random pages of each pgbench table
    size_before = cluster.sql("SELECT pg_relation_size('shrinks')")[0][0]
    cluster.sql("DELETE FROM shrinks WHERE n > 8000")
    cluster.sql("VACUUM shrinks")  # cuts the file's empty tail: the same file, shorter
    assert cluster.sql("SELECT pg_relation_size('shrinks')")[0][0] < size_before // 2
    cluster.sql("INSERT INTO grows SELECT g, repeat('g', 400) FROM generate_series(2001, 12000) g")  # longer
    cluster.sql("CREATE TABLE fresh AS SELECT g AS n FROM generate_series(1, 5000) g")  # a new file

    # The same changes, both schemes, every file read: groups first, content-defined chunks second
    # (so the small non-relation files the two share count against the scheme before, not against ours).
    block_incr = run_backup(archive.ctx, SOURCE, "incremental", checksum=True)
    monkeypatch.setattr(postgres, "BLOCK_RULE", None)
    cdc_incr = run_backup(archive.ctx, SOURCE, "incremental", checksum=True)
    monkeypatch.undo()
    assert block_incr.state == cdc_incr.state == "complete"
    # pgbench_accounts (~26 MB) and its index: each 1 MiB content-defined chunk holds a changed page;
    # a 32 KiB group rarely does.
    assert block_incr.stats["bytes_new"] * 3 < cdc_incr.stats["bytes_new"], (block_incr.stats, cdc_incr.stats)
    assert block_incr.stats["bytes_stored"] < cdc_incr.stats["bytes_stored"], (block_incr.stats, cdc_incr.stats)

    cluster.sql("SELECT pg_create_restore_point('compare')")
    expected = cluster.sql(FINGERPRINT)[0]
    cluster.wait_archived(cluster.switch_wal())
    fetch = write_fetch_script(recovery_area.base / "fetch.sh")
    with DisasterRecoveryManager(context=archive.ctx, source=SOURCE) as manager:
        port = free_port()
        result = manager.execute_point_in_time_recovery(
            name="compare", backup_id=block_incr.id, target_dir=recovery_area.new_dir(), start=True, port=port,
            restore_command=fetch, timeout=60,
        )  # fmt: skip
        assert result.success, f"{result.message}\n{result.problems}"
        assert result.plan.backup.id == block_incr.id
        assert recovery_area.sql(port, FINGERPRINT)[0] == expected


def _fork_server_pid() -> int | None:
    from multiprocessing import forkserver as mp_forkserver

    server = getattr(mp_forkserver, "_forkserver", None)
    return getattr(server, "_forkserver_pid", None)


def test_a_full_backup_starts_its_worker_processes_before_the_checkpoint_and_stops_them(
    archive: Archive, cluster: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import forkserver
    from app.backup.postgres import PostgresHooks

    pgbench(cluster, "-i", "-s", "1", "-q")
    monkeypatch.setattr(archive.ctx.settings, "backup_processes", 2)
    monkeypatch.setattr(archive.ctx.settings, "backup_processes_min_bytes", 1 << 20)
    monkeypatch.setattr(archive.ctx.settings, "backup_unit_bytes", 4 << 20)
    events: list[str] = []
    warm_up, walk = forkserver.warm_up, PostgresHooks.walk

    def noting_warm_up(storage_url: str | None = None) -> None:
        events.append("warm_up")  # in begin, before pg_backup_start (its checkpoint) and the walk
        warm_up(storage_url)

    def noting_walk(self: PostgresHooks, *args: object) -> object:
        events.append("walk")
        return walk(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(forkserver, "warm_up", noting_warm_up)
    monkeypatch.setattr(PostgresHooks, "walk", noting_walk)
    result = run_backup(archive.ctx, SOURCE, "full")
    assert result.state == "complete" and result.stats["units"] > 1
    assert events == ["warm_up", "walk"]
    assert _fork_server_pid() is None  # the engine stopped it

    # A backup that fails after the early start stops it too.
    def failing_walk(self: PostgresHooks, *args: object) -> object:
        raise RuntimeError("walk failed")

    monkeypatch.setattr(PostgresHooks, "walk", failing_walk)
    with pytest.raises(Exception, match="walk failed"):
        run_backup(archive.ctx, SOURCE, "full")
    assert events[-1] == "warm_up" and _fork_server_pid() is None
