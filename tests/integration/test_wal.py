"""WAL archiving against real PostgreSQL 15 clusters: archive_command is `wal push`, restore_command is
`wal fetch` (docs/WAL.md). The clusters run as the `postgres` user (tests/support/pgcluster.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import clock
from app.catalog.models import WalSegment
from app.catalog.sources import get_source
from app.wal import names
from app.wal.pushspool import PUSH_DIRNAME, PushSpool
from tests.support.pgarchive import SOURCE, Archive
from tests.support.pgcluster import PgCluster, chown_to_postgres

pytestmark = pytest.mark.slow

DSN_PASSWORD = "pw-that-must-never-show"


@pytest.fixture
def cluster(archive: Archive, pg_template: Path) -> Iterator[PgCluster]:
    with PgCluster.create(pg_template, archive.env) as started:
        yield started


def copy_as_wal_dir(tmp_path: Path, name: str, data: bytes) -> Path:
    """`data` as `<tmp>/pg_wal/<name>`, as PostgreSQL would hand it to a manual push."""
    directory = tmp_path / "pg_wal"
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    return path


def test_source_add_postgres_keeps_no_password_and_wants_one_kind(archive: Archive) -> None:
    dsn = f"postgresql://postgres:{DSN_PASSWORD}@127.0.0.1:5432/postgres?application_name=x"
    added = archive.cli("source", "add", "db2", "--postgres", dsn)
    assert DSN_PASSWORD not in added.stdout + added.stderr
    listed = json.loads(archive.cli("source", "list", "--json").stdout)
    assert [(s["name"], s["kind"]) for s in listed] == [(SOURCE, "postgres"), ("db2", "postgres")]
    with archive.ctx.sessions() as session:
        stored = get_source(session, "db2").options["dsn"]
    assert DSN_PASSWORD not in stored and "password" not in stored and "host=127.0.0.1" in stored
    both = archive.cli("source", "add", "x", "--path", "/tmp", "--postgres", "host=h", ok=False)
    assert both.returncode == 2 and "exactly one" in both.stderr


def test_archive_command_pushes_durably_and_records_once(
    archive: Archive, cluster: PgCluster, tmp_path: Path
) -> None:
    pushed = [cluster.switch_wal() for _ in range(2)]
    cluster.wait_archived(*pushed)

    for name in pushed:
        copy = cluster.wal_file(name)
        row = archive.row(name)
        assert row is not None and row.kind == "segment" and row.size == len(copy) == 1 << 20
        assert row.content_hash == archive.ctx.repository.chunk_ids.of(copy)
        assert archive.stored(name) == copy
        assert row.stored_size == archive.object_path(name).stat().st_size < len(copy) // 4  # zstd
    assert cluster.archiver()["failed_count"] == 0
    assert not archive.broker_was_contacted()  # CELERY_BROKER_URL pointed at a silent socket

    # The same content again (a lost acknowledgement): success, nothing written.
    name = pushed[0]
    before = archive.object_path(name).read_bytes()
    again = copy_as_wal_dir(tmp_path, name, cluster.wal_file(name))
    proc = archive.cli("wal", "push", str(again), "--verbose")
    assert "already archived" in proc.stdout
    assert archive.object_path(name).read_bytes() == before
    assert [row.name for row in archive.rows()].count(name) == 1

    # Other content under an archived name: a loud failure, and the stored object is untouched.
    changed = bytearray(again.read_bytes())
    changed[600_000] ^= 0xFF
    again.write_bytes(changed)
    refused = archive.cli("wal", "push", str(again), ok=False)
    assert refused.returncode == 14
    assert "different content" in refused.stderr and name in refused.stderr
    assert archive.object_path(name).read_bytes() == before
    assert archive.stored(name) == cluster.wal_file(name)


def test_fetch_verifies_reports_missing_quietly_and_damage_loudly(
    archive: Archive, cluster: PgCluster, tmp_path: Path
) -> None:
    pushed = [cluster.switch_wal() for _ in range(3)]
    cluster.wait_archived(*pushed)
    out = tmp_path / "restore"
    out.mkdir()

    archive.cli("wal", "fetch", pushed[0], str(out / "RECOVERYXLOG"), "--prefetch", "0")
    assert (out / "RECOVERYXLOG").read_bytes() == cluster.wal_file(pushed[0])

    segment_size = 1 << 20
    after_newest = names.segment_name(1, names.parse(pushed[-1]).segno(segment_size) + 1, segment_size)  # type: ignore[operator]
    for absent in (after_newest, "00000009.history"):
        quiet = archive.cli("wal", "fetch", absent, str(out / "X"), "--prefetch", "0", ok=False)
        assert (quiet.returncode, quiet.stdout, quiet.stderr) == (1, "", "")

    # A damaged object: fetch stops recovery (status > 125) and names it.
    damaged = archive.object_path(pushed[0])
    blob = bytearray(damaged.read_bytes())
    blob[-40] ^= 0x01
    damaged.write_bytes(blob)
    loud = archive.cli("wal", "fetch", pushed[0], str(out / "Y"), "--prefetch", "0", ok=False)
    assert loud.returncode == 128 + 5 and pushed[0] in loud.stderr and not (out / "Y").exists()

    # A hole: the segment is gone from storage and catalog while later ones exist.
    hole = pushed[1]
    archive.object_path(hole).unlink()
    with archive.ctx.sessions() as session, session.begin():
        session.delete(session.get(WalSegment, (1, hole)))
    gap = archive.cli("wal", "fetch", hole, str(out / "Z"), "--prefetch", "0", ok=False)
    assert gap.returncode == 128 + 14 and hole in gap.stderr and "missing" in gap.stderr

    status = json.loads(archive.cli("wal", "status", "--source", SOURCE, "--json").stdout)
    (timeline,) = status["timelines"]
    assert timeline["gaps"] == [{"first": hole, "last": hole, "segments": 1}]
    assert [r["first"] for r in timeline["ranges"]][-1] == pushed[2] and status["gaps"] == 1
    assert status["newest_segment"] == pushed[-1]
    # The RPO figure: the newest archived record is seconds old.
    assert status["rpo_seconds"] is not None and 0 <= status["rpo_seconds"] < 120
    newest = archive.archive_row()
    assert newest is not None and newest.newest_record_at is not None
    assert (clock.now() - clock.as_utc(newest.newest_record_at)).total_seconds() < 120


def test_lookahead_archives_ready_segments_in_one_call(archive: Archive, pg_template: Path) -> None:
    with PgCluster.create(pg_template, archive.env, archive=False) as cluster:
        ready = [cluster.switch_wal() for _ in range(5)]
        status = cluster.data / "pg_wal" / "archive_status"
        assert all((status / f"{name}.ready").exists() for name in ready)

        cluster.configure(archive_command=f"'{cluster.archive_script} %p'")
        cluster.wait_archived(*ready)

        calls = cluster.calls()
        assert len(calls) < len(ready), f"each segment had its own call: {calls}"
        assert calls[0][1].endswith(ready[0])
        stats = cluster.archiver()
        assert stats["failed_count"] == 0 and stats["archived_count"] == len(calls)
        rows = [row.name for row in archive.rows()]
        assert sorted(rows) == sorted(set(rows)) and set(ready) <= set(rows)
        for name in ready:
            assert archive.stored(name) == cluster.wal_file(name)


def test_push_killed_mid_flight_is_retried_and_archived_exactly_once(
    archive: Archive, pg_template: Path
) -> None:
    direct = {**archive.env, "WAL_PUSH_ASYNC": "false"}  # the archive_command pushes each file itself
    with PgCluster.create(pg_template, direct) as cluster:
        warm = cluster.switch_wal()
        cluster.wait_archived(warm)
        catalog = sqlite3.connect(archive.home / "catalog.sqlite3", timeout=30, isolation_level=None)
        try:
            catalog.execute("BEGIN IMMEDIATE")  # holds the catalog's write lock: push stores, then waits
            name = cluster.switch_wal()
            deadline = time.monotonic() + 60
            while not archive.object_path(name).exists():
                assert time.monotonic() < deadline, cluster.server_log()[-2000:]
                time.sleep(0.02)
            time.sleep(0.3)  # the push is now blocked on the catalog, between its two steps
            pid = next(pid for pid, path in reversed(cluster.calls()) if path.endswith(name))
            os.kill(pid, signal.SIGKILL)
        finally:
            with contextlib.suppress(sqlite3.Error):
                catalog.execute("ROLLBACK")
            catalog.close()

        # PostgreSQL 15 takes a killed archive_command (exit 137 from its shell) as fatal for the archiver;
        # the postmaster starts a new one on its next loop, which a connection triggers (else up to 60 s).
        deadline = time.monotonic() + 60
        while not cluster.is_archived(name):
            assert time.monotonic() < deadline, cluster.server_log()[-3000:]
            cluster.sql("SELECT 1")
            time.sleep(0.2)

        attempts = [path for _, path in cluster.calls() if path.endswith(name)]
        assert len(attempts) >= 2, "PostgreSQL did not retry the killed push"
        assert "archive command failed with exit code 137" in cluster.server_log()
        assert [row.name for row in archive.rows()].count(name) == 1
        assert archive.stored(name) == cluster.wal_file(name)
        assert not (cluster.data / "pg_wal" / PUSH_DIRNAME).exists()  # no pusher when asynchronous is off


def test_the_pusher_archives_ahead_and_a_pusher_killed_mid_flight_leaves_no_acknowledgement(
    archive: Archive, cluster: PgCluster
) -> None:
    warm = cluster.switch_wal()
    cluster.wait_archived(warm)
    spool = PushSpool(cluster.data / "pg_wal", SOURCE)
    deadline = time.monotonic() + 60
    while spool.pusher() is None:  # the first archive_command pushed itself, then became the pusher
        assert time.monotonic() < deadline, cluster.server_log()[-2000:]
        time.sleep(0.02)
    owner = spool.pusher()
    assert owner is not None and owner.pid != next(
        pid for pid, path in cluster.calls() if path.endswith(warm)
    )

    answered = [cluster.switch_wal() for _ in range(3)]
    cluster.wait_archived(*answered)
    log = (spool.dir / "pusher.log").read_text()
    assert log == "", log

    catalog = sqlite3.connect(archive.home / "catalog.sqlite3", timeout=30, isolation_level=None)
    try:
        catalog.execute("BEGIN IMMEDIATE")  # the pusher stores the next segment, then waits to record it
        name = cluster.switch_wal()
        deadline = time.monotonic() + 60
        while not archive.object_path(name).exists():
            assert time.monotonic() < deadline, cluster.server_log()[-2000:]
            time.sleep(0.02)
        time.sleep(0.3)
        assert spool.ack(name) is None  # stored, not recorded: not acknowledged
        os.kill(owner.pid, signal.SIGKILL)
        time.sleep(0.3)
        assert spool.ack(name) is None
    finally:
        with contextlib.suppress(sqlite3.Error):
            catalog.execute("ROLLBACK")
        catalog.close()

    # The waiting archive_command saw its pusher die and pushed the file itself: it found the object
    # and recorded it. PostgreSQL saw no failure at all.
    cluster.wait_archived(name)
    assert [row.name for row in archive.rows()].count(name) == 1
    for segment_name in (warm, *answered, name):
        assert archive.stored(segment_name) == cluster.wal_file(segment_name)
    assert cluster.archiver()["failed_count"] == 0
    assert not archive.broker_was_contacted()


def test_recovery_fetches_through_the_spool_and_archives_the_new_timeline(
    archive: Archive, cluster: PgCluster
) -> None:
    cluster.sql("CHECKPOINT")
    replayed = [cluster.switch_wal() for _ in range(3)]
    cluster.wait_archived(*replayed)
    (rows_before,) = cluster.sql("SELECT count(*) FROM filler")[0]
    cluster.stop(mode="immediate")
    # Without a backup_label PostgreSQL reads the checkpoint record from pg_wal (its segment stays),
    # replays what pg_wal holds, then switches to archive recovery: the later segments must come from
    # the archive.
    for name in replayed[1:]:
        (cluster.data / "pg_wal" / name).unlink()
    (cluster.data / "recovery.signal").touch()
    with open(cluster.data / "postgresql.conf", "a") as conf:
        conf.write(f"restore_command = '{cluster.restore_script} %f %p'\n")
    chown_to_postgres(cluster.data)
    cluster.start()

    deadline = time.monotonic() + 60
    while cluster.sql("SELECT pg_is_in_recovery()")[0][0]:
        assert time.monotonic() < deadline, cluster.server_log()[-3000:]
        time.sleep(0.1)
    assert cluster.sql("SELECT count(*) FROM filler")[0][0] == rows_before
    assert cluster.sql("SELECT timeline_id FROM pg_control_checkpoint()")[0][0] >= 1

    fetched = [path for _, path in cluster.calls("restore")]
    assert set(replayed[1:]) <= set(fetched), fetched
    spool = cluster.data / "pg_wal" / ".equisplit-dr-spool" / SOURCE
    assert (spool / ".lock").exists(), "no prefetcher was started"

    cluster.wait_archived("00000002.history")
    history = archive.row("00000002.history")
    assert history is not None and history.kind == "history" and history.segno is None
    assert "no recovery target" in archive.stored("00000002.history").decode() or archive.stored(
        "00000002.history"
    )
    status = json.loads(archive.cli("wal", "status", "--json").stdout)
    assert status["history"] == ["00000002.history"]
    assert "FATAL" not in cluster.server_log()
