"""Asynchronous push (docs/WAL.md section 3), in process: the pusher archives ready files and
acknowledges each only once it is durable and recorded; an archive_command trusts an acknowledgement
only for its own bytes, from a live pusher with its own settings."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.catalog import wal as catalog_wal
from app.catalog.models import WalSegment
from app.context import Context
from app.errors import CatalogError, ConfigurationError
from app.repo.format import Kind
from app.settings import load_settings
from app.storage.faulty import FaultyStorage
from app.wal import lockfile, names, pusher
from app.wal.push import archive_file, archive_target, read_wal_file
from app.wal.pushspool import ERROR, WAKE, Ack, PushSpool, async_enabled, fingerprint
from app.wal.spool import digest
from tests.unit.wal.conftest import SOURCE, WriteSegment, make_segment

MARK = fingerprint(os.environ)


@pytest.fixture
def spool(pg_wal: Path) -> PushSpool:
    made = PushSpool(pg_wal, SOURCE)
    made.dir.mkdir(parents=True)
    return made


def archiver(ctx: Context) -> Callable[[Path], str]:
    """What the pusher runs per file: read, archive (durable, then recorded), the digest of the bytes."""

    def archive(path: Path) -> str:
        file = read_wal_file(path)
        archive_file(ctx, ctx.repository, archive_target(ctx, SOURCE), file)
        return digest(file.data)

    return archive


@pytest.fixture
def running(spool: PushSpool, ctx: Context) -> Iterator[Callable[..., threading.Thread]]:
    """Start `pusher.run` in a thread (with the real archiver unless given another); stopped at the end."""
    threads: list[threading.Thread] = []

    def start(archive: Callable[[Path], str] | None = None) -> threading.Thread:
        thread = threading.Thread(
            target=pusher.run,
            args=(spool, archive or archiver(ctx), MARK, 2),
            kwargs={"idle_exit": 30.0},
        )
        thread.start()
        threads.append(thread)
        return thread

    yield start
    spool.request_stop()
    for thread in threads:
        thread.join(10)
        assert not thread.is_alive()


def wait_until(check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def rows(ctx: Context) -> dict[str, WalSegment]:
    with ctx.sessions() as session:
        return {row.name: row for row in session.query(WalSegment)}


@pytest.mark.parametrize(
    "value", ["true", "False", "1", "0", "yes", "NO", "on", "off", "t", "f", "y", "n", "TRUE", None]
)
def test_the_fast_path_reads_wal_push_async_as_the_settings_do(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("WAL_PUSH_ASYNC", raising=False)
    else:
        monkeypatch.setenv("WAL_PUSH_ASYNC", value)
    assert async_enabled(os.environ) == load_settings().wal_push_async


def test_a_malformed_wal_push_async_is_left_to_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("sometimes", " true"):
        monkeypatch.setenv("WAL_PUSH_ASYNC", value)
        assert async_enabled(os.environ) is None
        with pytest.raises(ConfigurationError, match="WAL_PUSH_ASYNC"):
            load_settings()


def test_the_fingerprint_follows_where_wal_goes_never_the_key() -> None:
    base = {"EQUISPLIT_DR_HOME": "/a", "BACKUP_ENCRYPTION_KEY": "1" * 64}
    assert fingerprint(base, "/d") == fingerprint({**base, "BACKUP_ENCRYPTION_KEY": "2" * 64}, "/d")
    assert fingerprint(base, "/d") != fingerprint({**base, "EQUISPLIT_DR_HOME": "/b"}, "/d")
    assert fingerprint(base, "/d") != fingerprint({**base, "BACKUP_STORAGE_URL": "s3://b"}, "/d")
    assert fingerprint(base, "/d") != fingerprint(base, "/other-data-directory")


def test_the_pusher_acknowledges_a_file_only_once_it_is_stored_and_recorded(
    ctx: Context, spool: PushSpool, write_segment: WriteSegment, running: Callable[..., threading.Thread],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    acknowledged: list[str] = []
    write_ack = PushSpool.write_ack

    def checked_write_ack(self: PushSpool, name: str, ack: Ack) -> None:
        # the moment the acknowledgement is written, the object and the row must both exist
        assert ctx.storage.stat(Kind.WAL, names.object_name(SOURCE, name)) is not None
        assert name in rows(ctx)
        acknowledged.append(name)
        write_ack(self, name, ack)

    monkeypatch.setattr(PushSpool, "write_ack", checked_write_ack)
    paths = [write_segment(segno, ready=True) for segno in (3, 4, 5)]
    history = spool.wal_dir / "00000002.history"
    history.write_text("1\t0/3000000\tno recovery target specified\n")
    (spool.status_dir / "00000002.history.ready").touch()
    backup = spool.wal_dir / f"{paths[0].name}.00000028.backup"
    backup.write_text("START WAL LOCATION: 0/3000028\n")
    (spool.status_dir / f"{backup.name}.ready").touch()
    running()

    everything = [*paths, history, backup]
    wait_until(lambda: all(spool.ack(p.name) for p in everything))
    assert sorted(acknowledged) == sorted(p.name for p in everything)
    for path in everything:
        assert spool.ack(path.name) == Ack(digest(path.read_bytes()), MARK)
        assert spool.await_ack(path, MARK)
    kinds = {name: row.kind for name, row in rows(ctx).items()}
    assert kinds == {**{p.name: "segment" for p in paths}, history.name: "history", backup.name: "backup"}
    assert all((spool.status_dir / f"{p.name}.ready").exists() for p in everything)  # PostgreSQL's to mark


def test_a_file_the_pusher_cannot_store_gets_an_error_and_never_an_ack(
    ctx: Context, spool: PushSpool, write_segment: WriteSegment, running: Callable[..., threading.Thread]
) -> None:
    ctx.__dict__["storage"] = FaultyStorage(ctx.storage, {"put": set(range(1, 100))})
    ctx.__dict__.pop("repository", None)
    path = write_segment(3, ready=True)
    running()
    wait_until(lambda: spool.error(path.name))
    assert "injected fault" in (spool.error(path.name) or "")
    assert spool.ack(path.name) is None and rows(ctx) == {}
    assert not spool.await_ack(path, MARK)  # the archive_command pushes it itself, and reports


def test_a_file_stored_but_not_recorded_is_not_acknowledged(
    ctx: Context, spool: PushSpool, write_segment: WriteSegment, running: Callable[..., threading.Thread],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    def catalog_gone(*_: object) -> None:
        raise CatalogError("the catalog database cannot be reached (OperationalError)")

    monkeypatch.setattr(catalog_wal, "record_segment", catalog_gone)
    path = write_segment(3, ready=True)
    running()
    wait_until(lambda: spool.error(path.name))
    assert "cannot be reached" in (spool.error(path.name) or "")
    assert ctx.storage.stat(Kind.WAL, names.object_name(SOURCE, path.name)) is not None  # stored ...
    assert spool.ack(path.name) is None and rows(ctx) == {}  # ... not recorded: no acknowledgement


def test_the_same_file_again_is_acknowledged_and_other_content_is_not(
    ctx: Context, spool: PushSpool, write_segment: WriteSegment, running: Callable[..., threading.Thread]
) -> None:
    path = write_segment(3, ready=True)
    running()
    wait_until(lambda: spool.ack(path.name))
    (spool.status_dir / f"{path.name}.ready").rename(spool.status_dir / f"{path.name}.done")
    wait_until(lambda: spool.ack(path.name) is None)  # pruned once PostgreSQL marked it done

    # PostgreSQL asks again (a lost acknowledgement): the same bytes are acknowledged again
    (spool.status_dir / f"{path.name}.ready").touch()
    spool.wake()
    wait_until(lambda: spool.ack(path.name))
    assert spool.await_ack(path, MARK) and list(rows(ctx)) == [path.name]
    (spool.status_dir / f"{path.name}.ready").unlink()
    wait_until(lambda: spool.ack(path.name) is None)

    # other bytes under that name: an error, and no acknowledgement
    write_segment(3, make_segment(3, fill=b"other content "), ready=True)
    spool.wake()
    wait_until(lambda: spool.error(path.name))
    assert "different content" in (spool.error(path.name) or "")
    assert spool.ack(path.name) is None and not spool.await_ack(path, MARK)


def test_an_ack_counts_only_for_the_same_bytes_and_settings(
    spool: PushSpool, write_segment: WriteSegment
) -> None:
    path = write_segment(3, ready=True)
    right = Ack(digest(path.read_bytes()), MARK)
    lock = spool.lock(MARK)  # a live pusher
    try:
        spool.write_ack(path.name, right)
        assert spool.await_ack(path, MARK)
        spool.write_ack(path.name, right._replace(digest=digest(b"other bytes")))
        assert not spool.await_ack(path, MARK)
        spool.write_ack(path.name, right._replace(fingerprint="0" * 32))
        assert not spool.await_ack(path, MARK)
    finally:
        assert lock is not None
        os.close(lock)
    spool.write_ack(path.name, right)
    assert spool.await_ack(path, MARK)  # written before its pusher left: still true
    (spool.status_dir / f"{path.name}.ready").unlink()
    assert not spool.await_ack(path, MARK)  # not PostgreSQL's ready file: pushed directly


def test_an_archive_command_does_not_wait_for_a_missing_failed_or_stale_pusher(
    spool: PushSpool, write_segment: WriteSegment
) -> None:
    path = write_segment(3, ready=True)
    start = time.monotonic()
    assert not spool.await_ack(path, MARK, timeout=30)  # no pusher at all
    lock = spool.lock(MARK)
    assert lock is not None
    try:
        spool.write_error(path.name, "storage unreachable")
        assert not spool.await_ack(path, MARK, timeout=30)  # it failed on this file
        (spool.dir / f"{path.name}{ERROR}").unlink()
        assert not spool.await_ack(path, MARK, timeout=0.2)  # it does not answer in time
        assert time.monotonic() - start < 20
    finally:
        os.close(lock)

    other = spool.lock("f" * 32)  # a pusher started with other settings
    assert other is not None
    try:
        assert not spool.stop_requested()
        assert not spool.await_ack(path, MARK, timeout=30)
        assert spool.stop_requested()  # it is asked to leave
    finally:
        os.close(other)


def test_a_stopped_or_orphaned_pusher_leaves(
    ctx: Context, spool: PushSpool, write_segment: WriteSegment, running: Callable[..., threading.Thread]
) -> None:
    write_segment(3, ready=True)
    thread = running()
    spool.request_stop()
    thread.join(10)
    assert not thread.is_alive()
    spool.clear_stop()
    thread = running()
    (spool.status_dir / f"{write_segment(4).name}.ready").touch()
    for entry in spool.status_dir.iterdir():  # the cluster's directory is removed
        entry.unlink()
    spool.status_dir.rmdir()
    thread.join(10)
    assert not thread.is_alive()


def test_one_pusher_per_spool(spool: PushSpool) -> None:
    lock = spool.lock(MARK)
    assert lock is not None
    try:
        assert spool.pusher() == (os.getpid(), MARK)
        assert PushSpool(spool.wal_dir, SOURCE).lock(MARK) is None
        assert lockfile.is_held(spool.dir / ".lock")
    finally:
        os.close(lock)
    assert spool.pusher() is None


def test_a_new_pusher_redoes_what_a_pusher_with_other_settings_acknowledged(
    ctx: Context, spool: PushSpool, write_segment: WriteSegment, running: Callable[..., threading.Thread]
) -> None:
    path = write_segment(3, ready=True)
    spool.write_ack(path.name, Ack(digest(path.read_bytes()), "e" * 32))  # archived elsewhere
    assert not spool.await_ack(path, MARK)
    running()
    wait_until(lambda: (spool.ack(path.name) or Ack("", "")).fingerprint == MARK)
    assert spool.await_ack(path, MARK) and list(rows(ctx)) == [path.name]


def test_a_pusher_notices_its_repository_and_catalog_were_re_created_in_place(
    ctx: Context, tmp_path: Path
) -> None:
    """Same settings, new repository: a long-lived pusher must not go on writing into the deleted
    catalog file (PostgreSQL would be told segments are archived that the new catalog never saw)."""
    import shutil

    from app.catalog.db import migrate
    from app.repo.repository import Repository
    from app.wal.pusher import _identity_check

    still_same = _identity_check(ctx)
    assert still_same()
    home = ctx.settings.home
    shutil.rmtree(home / "repo")
    for suffix in ("", "-wal", "-shm"):
        (home / f"catalog.sqlite3{suffix}").unlink(missing_ok=True)
    fresh = Context(ctx.settings)
    try:
        migrate(fresh.engine)
        Repository.init(fresh.storage, fresh.master_key())
        assert not still_same()
    finally:
        fresh.close()


def test_a_running_pusher_seals_with_the_data_key_a_rotation_started(
    ctx: Context, spool: PushSpool, write_segment: WriteSegment
) -> None:
    """A long-lived pusher re-reads the keyring before each file: after a rotation it seals with the new
    current data key, never on with the retired one until restarted."""
    from app.repo.crypto import envelope_key_id
    from app.repo.repository import Repository

    settings = ctx.settings.model_copy(update={"wal_push_async": True})
    thread = threading.Thread(target=pusher._serve, args=(spool, SOURCE, MARK, settings))
    thread.start()
    try:
        first = write_segment(3, ready=True)
        wait_until(lambda: spool.ack(first.name))
        repo = Repository.open(ctx.storage, ctx.master_key())
        old_key = repo.keyring.current_key_id
        repo.rotate_master_key(ctx.master_key(), new_data_key=True)
        new_key = repo.keyring.current_key_id
        second = write_segment(4, ready=True)
        wait_until(lambda: spool.ack(second.name))
    finally:
        spool.request_stop()
        thread.join(30)
    assert not thread.is_alive()

    def sealed_by(path: Path) -> bytes:
        return envelope_key_id(ctx.storage.get(Kind.WAL, names.object_name(SOURCE, path.name)))

    assert sealed_by(first) == old_key and sealed_by(second) == new_key != old_key


def test_waking_a_pusher_that_leaves_meanwhile_is_harmless(
    spool: PushSpool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pusher may close its end of the wake-up pipe between a waker's open and its write (it saw the
    stop file, or went idle): that write meets a pipe with no reader (EPIPE). Nothing listens any more,
    as when no pusher ever opened it: the waker goes on. Once seen as a BrokenPipeError in the pusher's
    tests, raised by the fixture's `request_stop()`; an archive_command's wake would have failed too."""
    readers = [spool.open_wake()]
    real_open = os.open

    def open_then_pusher_leaves(path: object, flags: int, *args: object) -> int:
        fd = real_open(path, flags, *args)  # type: ignore[arg-type]
        if str(path).endswith(WAKE) and flags & os.O_WRONLY and readers:
            os.close(readers.pop())  # the pusher's run() ends here: its finally closes the pipe
        return fd

    monkeypatch.setattr("app.wal.pushspool.os.open", open_then_pusher_leaves)
    spool.wake()
    spool.request_stop()
    assert spool.stop_requested()
