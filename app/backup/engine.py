"""A whole backup in this process: prepare, every unit on a shared thread pool and pack writer, finalize.
The cluster runs the same three steps as Celery tasks (tasks/backup.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from app.backup.finalize import fail_backup, finalize_backup
from app.backup.heartbeat import Heartbeat
from app.backup.hooks import hooks_for, load_source
from app.backup.prepare import LOCAL_LEASE, prepare_backup
from app.backup.result import BackupResult
from app.backup.unit import new_writer, run_unit
from app.context import Context
from app.errors import BackupFailedError, EquisplitError

__all__ = ["BackupResult", "run_backup", "runs_in_one_process"]

MAX_UNITS_IN_FLIGHT = 8


class _Progress:
    def __init__(self, callback: Callable[[int, int], None] | None, total: int) -> None:
        self.callback, self.total, self.done = callback, total, 0
        self.lock = threading.Lock()

    def add(self, nbytes: int) -> None:
        with self.lock:
            self.done += nbytes
            done = self.done
        if self.callback:
            self.callback(done, self.total)


def runs_in_one_process(ctx: Context, source_name: str) -> bool:
    """Whether the source's backup must run whole in one process: a PostgreSQL backup holds one
    session from pg_backup_start to pg_backup_stop, which cannot outlive the task that opened it."""
    return load_source(ctx, source_name).kind == "postgres"


def run_backup(
    ctx: Context,
    source_name: str,
    backup_type: str,
    *,
    progress: Callable[[int, int], None] | None = None,
    actor: str | None = None,
    checksum: bool | None = None,
) -> BackupResult:
    """Back up a registered source now, using every core of this machine.

    A PostgreSQL source's session (pg_backup_start to pg_backup_stop) is held here for the whole
    backup. `checksum` re-reads every file; by default only PostgreSQL sources with
    BACKUP_PG_CHECKSUM_MODE do."""
    source = load_source(ctx, source_name)
    hooks = hooks_for(source)
    if checksum is None:
        checksum = source.kind == "postgres" and ctx.settings.backup_pg_checksum_mode
    try:
        prepared = prepare_backup(ctx, source_name, backup_type, hooks=hooks, checksum=checksum)
    except BaseException:
        hooks.close()
        raise
    heartbeat = Heartbeat(ctx, prepared.backup_id, prepared.lease, prepared.holder, LOCAL_LEASE)
    heartbeat.start()
    tracker = _Progress(progress, prepared.bytes_to_read)
    try:
        writer = new_writer(ctx, prepared.backup_id, prepared.storage_class)
        try:
            threads = ctx.settings.worker_threads
            with (
                ThreadPoolExecutor(threads, thread_name_prefix="backup-read") as files,
                ThreadPoolExecutor(
                    min(MAX_UNITS_IN_FLIGHT, max(1, len(prepared.units))), thread_name_prefix="backup-unit"
                ) as units,
            ):
                futures = [
                    units.submit(
                        run_unit, ctx, prepared.backup_id, n, writer=writer, pool=files, progress=tracker.add
                    )
                    for n in prepared.units
                ]
                for future in futures:
                    future.result()
            writer.flush()
            hooks.finish(ctx, prepared.backup_id, writer)
        finally:
            writer.close()
        result = finalize_backup(ctx, prepared.backup_id, actor=actor)
    except BaseException as exc:
        hooks.close()  # before marking it failed: PostgreSQL ends the backup with its session
        fail_backup(ctx, prepared.backup_id, exc, actor=actor)
        if isinstance(exc, EquisplitError):
            raise
        raise BackupFailedError(f"backup {prepared.backup_id} of {source_name} failed: {exc}") from exc
    finally:
        hooks.close()
        heartbeat.stopped.set()
    result.job_id = prepared.job_id
    return result
