"""The pusher (docs/WAL.md section 3, asynchronous push): a detached process that archives the WAL files
PostgreSQL has marked ready, several at once, and acknowledges each in the push spool only once it is
durable and recorded; `wal push` then answers PostgreSQL from the acknowledgement. One per spool (flock).

Run as `python -m app.wal.pusher --source S --wal-dir PG_WAL --spool ROOT`; it reads its settings from
the environment it was started with, and leaves when it is idle, when its WAL directory is gone, or when
an archive_command with other settings asks it to.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.errors import EquisplitError, WalError
from app.wal.pushspool import ACK, Ack, PushSpool, fingerprint, ready_files

if TYPE_CHECKING:
    from app.settings import Settings

#: seconds without a ready file to archive (and without an archive_command) after which the pusher exits
IDLE_EXIT = 300.0
#: the poll interval while archiving, and for IDLE_AFTER seconds after: the next file is usually close
POLL = 0.005
IDLE_POLL = 1.0
IDLE_AFTER = 2.0
#: seconds before a file that failed is tried again (the archive_command pushes it directly meanwhile)
ERROR_RETRY = 5.0


def run(
    spool: PushSpool,
    archive: Callable[[Path], str],
    mark: str,
    concurrency: int,
    *,
    idle_exit: float = IDLE_EXIT,
) -> None:
    """Archive ready files, `concurrency` at a time in archiver order, until idle for `idle_exit` seconds.

    `archive(path)` returns the digest of the bytes it made durable and recorded; only then is the file
    acknowledged (with `mark`, the pusher's fingerprint). A failure is written as the file's error and
    retried after ERROR_RETRY. The caller holds the spool's lock.
    """
    for name, entry in spool.noted():  # a previous pusher's, perhaps with other settings: redo them
        if entry.endswith(ACK) and (spool.ack(name) or Ack("", "")).fingerprint != mark:
            (spool.dir / entry).unlink(missing_ok=True)
    wake = spool.open_wake()
    inflight: dict[str, Future[str]] = {}
    retry_at: dict[str, float] = {}
    active = time.monotonic()
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="wal-pusher")
    try:
        while spool.status_dir.is_dir() and spool.dir.is_dir() and not spool.stop_requested():
            now = time.monotonic()
            for name, future in list(inflight.items()):
                if future.done():
                    del inflight[name]
                    active = now
                    if not _settle(spool, name, future, mark):
                        retry_at[name] = now + ERROR_RETRY
            ready = ready_files(spool.status_dir, exclude="", limit=sys.maxsize)
            spool.prune(set(ready))
            acked = {name for name, entry in spool.noted() if entry.endswith(ACK)}
            for name in ready:
                if len(inflight) >= concurrency:
                    break
                if name in acked or name in inflight or retry_at.get(name, 0.0) > now:
                    continue
                inflight[name] = pool.submit(archive, spool.wal_dir / name)
                active = now
            if not inflight and now - active > idle_exit:
                break
            timeout = POLL if inflight or now - active < IDLE_AFTER else IDLE_POLL
            if select.select([wake], [], [], timeout)[0]:
                os.read(wake, 4096)  # an archive_command asked: look again now
                active = time.monotonic()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for name, future in inflight.items():
            if future.done() and not future.cancelled():
                with contextlib.suppress(OSError):  # the spool may be gone
                    _settle(spool, name, future, mark)  # durable and recorded: acknowledge it still
        os.close(wake)


def _settle(spool: PushSpool, name: str, future: Future[str], mark: str) -> bool:
    """Acknowledge a finished archive, or note its error; whether it succeeded."""
    error = future.exception()
    if error is None:
        spool.write_ack(name, Ack(future.result(), mark))
        return True
    message = str(error) if isinstance(error, EquisplitError) else repr(error)
    spool.write_error(name, message)
    print(f"push of {name} failed: {message}", file=sys.stderr, flush=True)
    return False


def serve(spool: PushSpool, source: str, settings: Settings | None = None) -> int:
    """Be the pusher of `spool` until idle: 0 at once if another holds its lock; the settings are read
    from the environment unless given (a process that forked into the pusher has them)."""
    mark = fingerprint(os.environ)
    lock = spool.lock(mark)  # before anything heavy loads: archive_commands see a live pusher at once
    if lock is None:
        return 0
    try:
        spool.clear_stop()
        return _serve(spool, source, mark, settings)
    finally:
        os.close(lock)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.wal.pusher", description=__doc__)
    parser.add_argument("--source", required=True)
    parser.add_argument("--wal-dir", required=True, type=Path, help="PostgreSQL's pg_wal")
    parser.add_argument("--spool", type=Path, help="the push spool root")
    args = parser.parse_args(argv)
    return serve(PushSpool(args.wal_dir, args.source, args.spool), args.source)


def _serve(spool: PushSpool, source: str, mark: str, settings: Settings | None) -> int:
    from app.context import Context
    from app.settings import load_settings
    from app.wal.push import IN_FLIGHT_BUDGET, archive_file, archive_target, read_wal_file
    from app.wal.spool import digest

    try:
        settings = settings or load_settings()
        if not settings.wal_push_async:
            return 0
        ctx = Context(settings)
        try:
            target = archive_target(ctx, source)  # refuse an unknown source before taking any file
            repo = ctx.repository
            largest = target.segment_size or 16 << 20

            still_same = _identity_check(ctx)

            def archive(path: Path) -> str:
                if not still_same():
                    spool.request_stop()  # archive_commands push themselves, into what is there now
                    raise WalError(
                        "the repository or catalog this pusher opened was replaced (same settings, new "
                        "repository): it stops, and archive_command pushes into the new one"
                    )
                repo.refresh_keys()  # a key rotation since: seal with the new data key
                file = read_wal_file(path)
                # read again each time: the first segment archived records the cluster's identity
                archive_file(ctx, repo, archive_target(ctx, source), file)
                return digest(file.data)

            width = max(1, min(settings.wal_push_concurrency, IN_FLIGHT_BUDGET // largest))
            run(spool, archive, mark, width)
        finally:
            ctx.close()
    except EquisplitError as exc:
        print(f"pusher for source {source} stopped: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


def _identity_check(ctx: Any) -> Callable[[], bool]:
    """Whether the repository and the catalog at the settings' locations are still the ones this
    long-lived process opened: a repository re-created in place has a new config object (sealed with
    a new nonce), and an SQLite catalog re-created in place a new file, while this process would go on
    writing into the deleted one."""
    from sqlalchemy.engine import make_url

    from app.repo.format import Kind

    config = ctx.storage.get(Kind.CONFIG, "config")
    url = make_url(ctx.settings.catalog_url)
    database = url.database if url.get_backend_name() == "sqlite" else None
    ctx.engine.connect().close()  # the file this process writes into from now on
    inode = _inode(database)

    def still_same() -> bool:
        return ctx.storage.get(Kind.CONFIG, "config") == config and _inode(database) == inode

    return still_same


def _inode(path: str | None) -> tuple[int, int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (0, 0)
    return (st.st_dev, st.st_ino)


if __name__ == "__main__":
    sys.exit(main())
