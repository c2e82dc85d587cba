"""Push (docs/WAL.md section 3): durable, then recorded; every line of the re-push table; lookahead."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from app.catalog.db import transaction
from app.catalog.models import WalArchive, WalSegment
from app.context import Context
from app.errors import IntegrityError, SourceError, WalConflictError, WalError
from app.repo.format import Kind
from app.wal import names, segment
from app.wal.push import push, ready_files
from tests.unit.wal.conftest import SEGMENT_SIZE, SOURCE, SYSID, WriteSegment, make_segment


def rows(ctx: Context) -> dict[str, WalSegment]:
    with ctx.sessions() as session:
        return {row.name: row for row in session.query(WalSegment)}


def stored_bytes(ctx: Context, name: str) -> bytes:
    return ctx.storage.get(Kind.WAL, names.object_name(SOURCE, name))


def test_push_stores_then_records_with_the_keyed_content_hash(
    ctx: Context, write_segment: WriteSegment
) -> None:
    path = write_segment(3)
    report = push(ctx, SOURCE, path)
    assert report.requested.outcome == "stored" and report.ahead == [] and report.failed == []
    row = rows(ctx)[path.name]
    assert (row.kind, row.timeline, row.segno, row.size) == ("segment", 1, 3, SEGMENT_SIZE)
    assert row.content_hash == ctx.repository.chunk_ids.of(path.read_bytes())
    assert row.stored_size == len(stored_bytes(ctx, path.name)) < SEGMENT_SIZE // 10
    assert segment.read(ctx.repository, SOURCE, path.name)[1] == path.read_bytes()
    with ctx.sessions() as session:
        archive = session.get(WalArchive, row.source_id)
    assert archive is not None and archive.system_identifier == str(SYSID)
    assert archive.segment_size == SEGMENT_SIZE and archive.newest_segment == path.name
    assert archive.newest_record_at is not None


def test_the_same_content_again_succeeds_and_writes_nothing(
    ctx: Context, write_segment: WriteSegment
) -> None:
    path = write_segment(3)
    push(ctx, SOURCE, path)
    before = stored_bytes(ctx, path.name)
    assert push(ctx, SOURCE, path).requested.outcome == "already archived"
    assert stored_bytes(ctx, path.name) == before and len(rows(ctx)) == 1


def test_other_content_under_an_archived_name_fails_and_changes_nothing(
    ctx: Context, write_segment: WriteSegment
) -> None:
    path = write_segment(3)
    push(ctx, SOURCE, path)
    before = stored_bytes(ctx, path.name)
    write_segment(3, make_segment(3, fill=b"other content "))
    with pytest.raises(WalConflictError, match="different content") as caught:
        push(ctx, SOURCE, path)
    assert caught.value.hint is not None and "own source" in caught.value.hint
    assert stored_bytes(ctx, path.name) == before and len(rows(ctx)) == 1


def test_an_object_stored_by_a_killed_push_is_recorded_by_the_retry(
    ctx: Context, write_segment: WriteSegment
) -> None:
    path = write_segment(3)
    push(ctx, SOURCE, path)
    before = stored_bytes(ctx, path.name)
    with transaction(ctx.sessions) as session:  # as if killed between the put and the row
        session.query(WalSegment).delete()
    assert push(ctx, SOURCE, path).requested.outcome == "recorded"
    assert stored_bytes(ctx, path.name) == before and list(rows(ctx)) == [path.name]
    # ... and a different file under that name is refused by the object's own meta
    with transaction(ctx.sessions) as session:
        session.query(WalSegment).delete()
    write_segment(3, make_segment(3, fill=b"other content "))
    with pytest.raises(WalConflictError):
        push(ctx, SOURCE, path)


def test_a_damaged_object_without_a_row_is_reported_not_overwritten(
    ctx: Context, write_segment: WriteSegment
) -> None:
    path = write_segment(3)
    push(ctx, SOURCE, path)
    with transaction(ctx.sessions) as session:
        session.query(WalSegment).delete()
    damaged = bytearray(stored_bytes(ctx, path.name))
    damaged[-3] ^= 1
    ctx.storage.put(Kind.WAL, names.object_name(SOURCE, path.name), bytes(damaged))
    with pytest.raises(IntegrityError, match="cannot be read"):
        push(ctx, SOURCE, path)
    assert stored_bytes(ctx, path.name) == bytes(damaged)


def test_an_object_lost_from_storage_is_stored_again(ctx: Context, write_segment: WriteSegment) -> None:
    path = write_segment(3)
    push(ctx, SOURCE, path)
    ctx.storage.delete(Kind.WAL, names.object_name(SOURCE, path.name))
    assert push(ctx, SOURCE, path).requested.outcome == "stored again"
    assert segment.read(ctx.repository, SOURCE, path.name)[1] == path.read_bytes()


def test_lookahead_pushes_ready_files_and_marks_them_done(
    ctx: Context, write_segment: WriteSegment, pg_wal: Path
) -> None:
    first = write_segment(3)
    ahead = [write_segment(segno, ready=True) for segno in (4, 5, 6)]
    (pg_wal / "00000002.history").write_text("1\t0/4000000\tno recovery target specified\n")
    (pg_wal / "archive_status" / "00000002.history.ready").touch()
    (pg_wal / "archive_status" / f"{first.name}.ready").touch()

    report = push(ctx, SOURCE, first)

    assert {p.name for p in report.ahead} == {"00000002.history", *(p.name for p in ahead)}
    status = sorted(os.listdir(pg_wal / "archive_status"))
    assert f"{first.name}.ready" in status  # PostgreSQL marks the file it asked for itself
    assert all(f"{p.name}.done" in status for p in ahead) and "00000002.history.done" in status
    assert set(rows(ctx)) == {first.name, "00000002.history", *(p.name for p in ahead)}
    assert rows(ctx)["00000002.history"].kind == "history" and rows(ctx)["00000002.history"].segno is None


def test_ready_files_come_in_the_archivers_order_and_up_to_the_limit(pg_wal: Path) -> None:
    status = pg_wal / "archive_status"
    for name in ("000000010000000000000009", "000000010000000000000007", "00000003.history", "junk"):
        (status / f"{name}.ready").touch()
    (status / "000000010000000000000001.done").touch()
    assert ready_files(status, exclude="000000010000000000000007", limit=5) == [
        "00000003.history",
        "000000010000000000000009",
    ]
    assert ready_files(status, exclude="x", limit=1) == ["00000003.history"]
    assert ready_files(pg_wal / "absent", exclude="x", limit=5) == []


def test_a_failing_lookahead_file_stays_ready_and_does_not_fail_the_push(
    ctx: Context, write_segment: WriteSegment, pg_wal: Path
) -> None:
    first = write_segment(3)
    bad = write_segment(4, make_segment(4, address=9 * SEGMENT_SIZE), ready=True)
    report = push(ctx, SOURCE, first)
    assert report.requested.outcome == "stored"
    assert [name for name, _ in report.failed] == [bad.name] and "not the segment" in report.failed[0][1]
    assert (pg_wal / "archive_status" / f"{bad.name}.ready").exists()


@pytest.mark.parametrize(
    ("source", "error", "match"),
    [("files", SourceError, "PostgreSQL sources only"), ("nope", SourceError, "no source named")],
)
def test_only_a_registered_postgres_source_archives(
    ctx: Context, write_segment: WriteSegment, source: str, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        push(ctx, source, write_segment(3))


def test_a_segment_of_another_cluster_is_refused_before_anything_is_written(
    ctx: Context, write_segment: WriteSegment
) -> None:
    push(ctx, SOURCE, write_segment(3))
    other = write_segment(4, make_segment(4, sysid=99))
    with pytest.raises(WalError, match="system identifier 99"):
        push(ctx, SOURCE, other)
    assert ctx.storage.stat(Kind.WAL, names.object_name(SOURCE, other.name)) is None


def test_files_that_are_not_wal_are_refused(ctx: Context, pg_wal: Path) -> None:
    (pg_wal / "backup_label").write_text("x")
    with pytest.raises(WalError, match="not a WAL file name"):
        push(ctx, SOURCE, pg_wal / "backup_label")
    with pytest.raises(WalError, match="does not exist"):
        push(ctx, SOURCE, pg_wal / "000000010000000000000042")


def test_the_newest_record_time_only_moves_forward(ctx: Context, write_segment: WriteSegment) -> None:
    newer, older = write_segment(8), write_segment(7)
    push(ctx, SOURCE, newer)
    push(ctx, SOURCE, older)
    with ctx.sessions() as session:
        archive = session.query(WalArchive).one()
    assert archive.newest_segment == newer.name


def test_concurrent_pushes_of_one_file_record_it_once(ctx: Context, write_segment: WriteSegment) -> None:
    path = write_segment(3)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            push(ctx, SOURCE, path, lookahead=0)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and list(rows(ctx)) == [path.name]
    assert segment.read(ctx.repository, SOURCE, path.name)[1] == path.read_bytes()
