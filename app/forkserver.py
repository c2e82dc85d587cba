"""Worker processes for one job on this machine (a backup's units, a restore's files), forked from a
`multiprocessing` fork server that has imported the data path once.

Why processes: FastCDC, BLAKE3, zstd and AES-GCM release the GIL, but the Python around each chunk
and each small file does not, and threads handing the GIL over cost more than they save
(docs/BACKUP.md, "Using every core"). Why a fork server: it starts clean (no threads, no open
catalog connections to inherit), imports once, and can start while the job is still planning.

Workers watch the job's process and end the moment it does, so a killed job leaves nothing running.
That is also why a job may start them from a daemonic process (a Celery prefork child, which runs
restores and PostgreSQL backups): multiprocessing forbids a daemon children because its parent may
terminate it without its clean-up, orphaning them; ours never outlive the job (WorkerProcess).
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from multiprocessing.context import ForkServerContext, ForkServerProcess
from multiprocessing.sharedctypes import Synchronized
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # a restore's workers import no settings (app/restore/worker.py)
    from app.settings import Settings

#: What the fork server imports before forking workers: everything a worker runs.
PRELOAD = ["app.forkserver_process", "app.backup.procpool"]
#: ... for a restore's workers: the file writer alone, no catalog (~0.5 CPU-second less to import).
RESTORE_PRELOAD = ["app.forkserver_process", "app.restore.worker"]
#: ... and, for a job whose storage is S3, boto3 with S3's service model loaded (app/storage/s3_preload.py).
S3_PRELOAD = "app.storage.s3_preload"
#: A worker adds to the shared progress counter once it has this many bytes to report (it is locked).
PROGRESS_STEP = 4 << 20
POLL_SECONDS = 0.2

T = TypeVar("T")


def processes_for(settings: Settings) -> int:
    """How many worker processes a job may use: BACKUP_PROCESSES, or one per core this process may
    run on (its CPU affinity: `taskset`, a container's cpuset), not every core of the machine."""
    if settings.backup_processes:
        return settings.backup_processes
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # no affinity on this platform
        return os.cpu_count() or 1


_parent_config = threading.Lock()


@contextlib.contextmanager
def _as_plain_parent() -> Iterator[None]:
    """Let this process start a child although billiard runs it (a Celery prefork child: billiard
    makes its own process object multiprocessing's current one), only around WorkerProcess.start:
    not daemonic, and an authkey multiprocessing may pickle for the fork server (billiard's own
    refuses: 'Pickling an AuthenticationString object is disallowed'). Restored after."""
    from multiprocessing.process import AuthenticationString  # type: ignore[attr-defined]

    config: dict[str, Any] = multiprocessing.current_process()._config  # type: ignore[attr-defined]
    with _parent_config:
        saved: dict[str, Any] = {k: config[k] for k in ("daemon", "authkey") if k in config}
        config["daemon"] = False
        if "authkey" in saved and type(saved["authkey"]) is not AuthenticationString:
            config["authkey"] = AuthenticationString(bytes(saved["authkey"]))
        try:
            yield
        finally:
            config.pop("daemon", None)
            config.update(saved)


_main_module = threading.Lock()


@contextlib.contextmanager
def main_left_alone() -> Iterator[None]:
    """While a worker process starts, `__main__` names no file and no module. multiprocessing has every
    new process import the caller's main script again (as `__mp_main__`, for functions defined there),
    and a script without an `if __name__ == "__main__":` guard (the README's BackupSystem snippet saved
    as a file) then ran its whole self again in each worker: another backup, which found the source
    locked and broke the pool. Workers run only app/ code: they need nothing of `__main__`."""
    main = sys.modules.get("__main__")
    with _main_module:
        if main is None:
            yield
            return
        saved: dict[str, Any] = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
        main.__dict__.pop("__file__", None)
        main.__dict__["__spec__"] = None
        try:
            yield
        finally:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


class WorkerProcess(ForkServerProcess):
    """A job's worker process: started with `__main__` left alone (main_left_alone). Never a daemon:
    it ends with the job's process (init_worker, die_with), so it may be started from a daemonic one
    (a Celery prefork child), where the plain class fails with 'daemonic processes are not allowed to
    have children' (_as_plain_parent)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.daemon = False  # not inherited from a daemonic job process
        # the parent's key as multiprocessing's own kind (a billiard parent's refuses to be pickled)
        self.authkey = bytes(multiprocessing.current_process().authkey)

    def start(self) -> None:
        with main_left_alone(), _as_plain_parent():
            super().start()


class _WorkerContext(ForkServerContext):
    Process = WorkerProcess


_CONTEXT = _WorkerContext()


def context(storage_url: str | None = None, preload: list[str] | None = None) -> ForkServerContext:
    """The fork server context of a job's worker processes (WorkerProcess). A server started for a job
    whose `storage_url` is S3 also loads boto3 and S3's model (S3_PRELOAD); one already running stays
    as it was started. `preload`: what it imports (PRELOAD, a backup's; RESTORE_PRELOAD)."""
    s3 = storage_url is not None and storage_url.lower().startswith("s3:")
    modules = PRELOAD if preload is None else preload
    _CONTEXT.set_forkserver_preload([*modules, S3_PRELOAD] if s3 else modules)
    return _CONTEXT


def warm_up(storage_url: str | None = None, preload: list[str] | None = None) -> None:
    """Start the fork server now, so its imports overlap the job's planning; harmless if never used."""
    from multiprocessing import forkserver

    context(storage_url, preload)
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


def die_with(pid: int) -> None:
    """End this worker as soon as process `pid` (the job's) has ended, however it ended: a worker
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

    threading.Thread(target=watch, name="watch-job-process", daemon=True).start()


def init_worker(parent: int) -> None:
    """What every worker does first: end with the job's process, leave Ctrl-C to it, tune the
    collector as the CLI does (app/cli/entry.py)."""
    die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


class Progress:
    """A byte counter shared by a job's workers; each adds in steps of PROGRESS_STEP."""

    def __init__(self, counter: Synchronized[int]) -> None:
        self.counter = counter
        self.pending = 0

    def add(self, nbytes: int) -> None:
        self.pending += nbytes
        if self.pending >= PROGRESS_STEP:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            with self.counter.get_lock():
                self.counter.value += self.pending
            self.pending = 0


def wait_all(futures: list[Future[T]], counter: Synchronized[int], progress: Any | None = None) -> list[T]:
    """Wait for every future, reporting the counter's growth to `progress(nbytes)` as it goes; the
    first failure cancels what has not started and is raised once the running ones have ended."""
    reported = 0
    pending: set[Future[T]] = set(futures)
    while pending:
        done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_EXCEPTION)
        if progress is not None:
            value = int(counter.value)
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
