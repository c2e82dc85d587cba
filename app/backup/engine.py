"""A whole backup in this process: prepare, every unit on a shared thread pool and pack writer, finalize.
The cluster runs the same three steps as Celery tasks (tasks/backup.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from app.backup.finalize import fail_backup, finalize_backup
from app.backup.heartbeat import Heartbeat
from app.backup.prepare import LOCAL_LEASE, prepare_backup
from app.backup.result import BackupResult
from app.backup.unit import new_writer, run_unit
from app.context import Context
from app.errors import BackupFailedError, EquisplitError

__all__ = ["BackupResult", "run_backup"]

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


def run_backup(
    ctx: Context,
    source_name: str,
    backup_type: str,
    *,
    progress: Callable[[int, int], None] | None = None,
    actor: str | None = None,
) -> BackupResult:
    """Back up a registered file-tree source now, using every core of this machine."""
    prepared = prepare_backup(ctx, source_name, backup_type)
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
        finally:
            writer.close()
        result = finalize_backup(ctx, prepared.backup_id, actor=actor)
    except BaseException as exc:
        fail_backup(ctx, prepared.backup_id, exc, actor=actor)
        if isinstance(exc, EquisplitError):
            raise
        raise BackupFailedError(f"backup {prepared.backup_id} of {source_name} failed: {exc}") from exc
    finally:
        heartbeat.stopped.set()
    result.job_id = prepared.job_id
    return result
