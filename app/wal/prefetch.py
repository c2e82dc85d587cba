"""The prefetcher (docs/WAL.md section 4): a detached process that keeps the segments after recovery's
position in the spool, fetched and verified in parallel. `wal fetch` starts it; one per spool (flock).

Run as `python -m app.wal.prefetch --source S --spool ROOT`; it reads its settings from the environment.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from app.errors import ObjectNotFoundError
from app.wal import names
from app.wal.spool import Spool

if TYPE_CHECKING:
    from app.settings import Settings

#: seconds without a new position after which the prefetcher clears the spool and exits
IDLE_EXIT = 30.0
POLL = 0.005
#: the poll interval once recovery has not moved for IDLE_AFTER seconds
IDLE_POLL = 0.05
IDLE_AFTER = 1.0
#: seconds before a segment missing from storage is tried again (standby mode: it may arrive)
MISSING_RETRY = 1.0
ERROR_RETRY = 5.0


def run(
    spool: Spool,
    fetch: Callable[[str], bytes],
    depth: int,
    concurrency: int,
    *,
    idle_exit: float = IDLE_EXIT,
) -> None:
    """Keep `depth` segments after the spool's position spooled until it stops moving; then clear it.

    The caller holds the spool's lock. Segments are fetched nearest first and never past one that is
    missing or failed (until its retry time).
    """
    inflight: dict[str, Future[None]] = {}
    retry_at: dict[str, float] = {}
    last_want: tuple[names.WalName, int] | None = None
    changed = time.monotonic()
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="wal-prefetch")
    try:
        while spool.dir.is_dir():
            now = time.monotonic()
            want = spool.want()
            if want != last_want:
                last_want, changed = want, now
            for name, future in list(inflight.items()):
                if future.done():
                    del inflight[name]
                    error = future.exception()
                    if error is None:
                        retry_at.pop(name, None)
                    else:
                        missing = isinstance(error, ObjectNotFoundError)
                        retry_at[name] = now + (MISSING_RETRY if missing else ERROR_RETRY)
                        if not missing:
                            print(f"prefetch of {name} failed: {error}", file=sys.stderr, flush=True)
            if want is None or (now - changed > idle_exit and not inflight):
                break
            window = names.following(want[0], want[1], depth)
            spool.prune(set(window))
            spooled = spool.spooled()
            others = spool.in_flight_names()  # a fetch filling the spool itself
            for name in window:
                if name in spooled or name in inflight or name in others:
                    continue
                if retry_at.get(name, 0.0) > now or len(inflight) >= concurrency:
                    break
                inflight[name] = pool.submit(spool.write, name, partial(fetch, name))
            time.sleep(POLL if now - changed < IDLE_AFTER or inflight else IDLE_POLL)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        spool.clear()


def serve(spool: Spool, settings: Settings | None = None) -> int:
    """Be the prefetcher of `spool` until recovery stops moving: 0 at once if another holds its lock;
    the settings are read from the environment unless given (a fetch that forked into the prefetcher)."""
    lock = spool.lock()
    if lock is None:
        return 0  # another prefetcher serves this spool
    try:
        from app.settings import load_settings
        from app.wal import segment
        from app.wal.fetch import open_repository

        settings = settings or load_settings()
        if settings.wal_prefetch == 0:
            return 0
        repo = open_repository(settings)
        try:

            def fetch(name: str) -> bytes:
                return segment.read(repo, spool.source, name)[1]

            run(spool, fetch, settings.wal_prefetch, settings.wal_prefetch_concurrency)
        finally:
            repo.storage.close()
        return 0
    finally:
        os.close(lock)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.wal.prefetch", description=__doc__)
    parser.add_argument("--source", required=True)
    parser.add_argument("--spool", required=True, type=Path, help="the spool root")
    args = parser.parse_args(argv)
    return serve(Spool(args.spool, args.source))


if __name__ == "__main__":
    sys.exit(main())
