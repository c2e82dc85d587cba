"""One backup's units on every core of this machine: a pool of worker processes, one GIL each.

Threads alone leave a backup bound by the interpreter: chunking, hashing, zstd and AES-GCM release
the GIL, but the Python around each chunk (and each small file) does not, and the threads' handing
it over costs more than it saves (docs/BACKUP.md, "Using every core"). Each process here runs whole
units exactly as a cluster worker does (`run_unit` with its own writer: its packs are durable and
indexed before its result is written), so the local engine and the cluster share one data path.

Processes come from a fork server started before the walk (`warm_up`): it imports the data path once,
beside the walk, and each worker forks from it ready to run. The parent keeps the source's lease,
the PostgreSQL session (if any) and the catalog's job row; workers end as soon as it does, so a
killed backup leaves nothing running.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from multiprocessing.context import ForkServerContext
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from app.backup.claims import SharedClaims
from app.backup.unit import UnitOutcome, run_unit
from app.context import Context
from app.settings import Settings

#: The module a fork server imports before forking workers: everything a unit needs.
PRELOAD = ["app.backup.procpool"]
#: A worker adds to the shared progress counter once it has read this much (the counter is locked).
PROGRESS_STEP = 4 << 20
POLL_SECONDS = 0.2

_worker_ctx: Context | None = None
_worker_counter: Synchronized[int] | None = None
_worker_claims: SharedClaims | None = None


def processes_for(settings: Settings) -> int:
    """How many worker processes a local backup may use: BACKUP_PROCESSES, or one per core."""
    return settings.backup_processes or (os.cpu_count() or 1)


def _context() -> ForkServerContext:
    mp = multiprocessing.get_context("forkserver")
    assert isinstance(mp, ForkServerContext)
    mp.set_forkserver_preload(PRELOAD)
    return mp


def warm_up() -> None:
    """Start the fork server now, so its imports overlap the walk; harmless if never used."""
    from multiprocessing import forkserver

    _context()
    forkserver.ensure_running()


def stop_server(*, used: bool) -> None:
    """Stop the fork server and reap it, so its workers' CPU time is counted as this process's. One
    that never forked a worker may still be importing: it is killed rather than waited for."""
    from multiprocessing import forkserver

    server: Any = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if server is None or pid is None:
        return
    if not used:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(AttributeError, ChildProcessError):
        server._stop()


def _die_with(pid: int) -> None:
    """End this worker as soon as process `pid` (the backup's) has ended, however it ended: a worker
    holds its own pipes open, so it would otherwise wait forever, and keep the fork server alive."""

    def watch() -> None:
        try:
            handle = os.pidfd_open(pid)
        except (AttributeError, OSError):  # no pidfd (not Linux 5.3+): look twice a second
            while True:
                time.sleep(0.5)
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    os._exit(1)
        select.select([handle], [], [])  # readable once the process has ended
        os._exit(1)

    threading.Thread(target=watch, name="watch-backup-process", daemon=True).start()


def _init_worker(settings: Settings, counter: Synchronized[int], claims: SharedClaims, parent: int) -> None:
    global _worker_ctx, _worker_counter, _worker_claims
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # as the CLI does (app/cli/entry.py)
    _worker_ctx = Context(settings)
    _worker_counter = counter
    _worker_claims = claims


def _ready() -> int:
    return os.getpid()


def _run_unit(backup_id: str, number: int) -> UnitOutcome:
    assert _worker_ctx is not None and _worker_counter is not None and _worker_claims is not None
    counter = _worker_counter
    pending = [0]

    def progress(nbytes: int) -> None:
        pending[0] += nbytes
        if pending[0] >= PROGRESS_STEP:
            with counter.get_lock():
                counter.value += pending[0]
            pending[0] = 0

    try:
        return run_unit(_worker_ctx, backup_id, number, progress=progress, claim=_worker_claims.claim)
    finally:
        with counter.get_lock():
            counter.value += pending[0]


class UnitPool:
    """Worker processes for the units of one backup; a context manager."""

    def __init__(
        self, settings: Settings, processes: int, threads_per_process: int, expected_chunks: int
    ) -> None:
        mp = _context()
        self._counter: Synchronized[int] = mp.Value("q", 0)
        claims = SharedClaims(mp, expected_chunks)
        worker_settings = settings.model_copy(update={"backup_threads": threads_per_process})
        self._executor = ProcessPoolExecutor(
            processes,
            mp_context=mp,
            initializer=_init_worker,
            initargs=(worker_settings, self._counter, claims, os.getpid()),
        )
        self.processes = processes

    def __enter__(self) -> UnitPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def run(
        self,
        backup_id: str,
        units: Sequence[tuple[int, int]],
        progress: Callable[[int], None] | None = None,
    ) -> list[UnitOutcome]:
        """Run `units` ((number, bytes) pairs), biggest first so the last to finish is a small one;
        the first failure cancels what has not started and is raised once the running ones end."""
        order = sorted(units, key=lambda u: -u[1])
        futures: list[Future[UnitOutcome]] = [
            self._executor.submit(_run_unit, backup_id, number) for number, _ in order
        ]
        reported = 0
        pending: set[Future[UnitOutcome]] = set(futures)
        while pending:
            done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_EXCEPTION)
            if progress is not None:
                value = int(self._counter.value)
                if value > reported:
                    progress(value - reported)
                    reported = value
            failed = [f for f in done if f.exception() is not None]
            if failed:
                for other in pending:
                    other.cancel()
                wait(pending)
                raise failed[0].exception()  # type: ignore[misc]
        return [f.result() for f in futures]
