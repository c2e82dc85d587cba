"""A whole backup in this process: prepare, every unit on a shared thread pool and pack writer, finalize.
The cluster runs the same three steps as Celery tasks (tasks/backup.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from app import forkserver
from app.backup import procpool
from app.backup.finalize import fail_backup, finalize_backup
from app.backup.heartbeat import Heartbeat
from app.backup.hooks import SourceHooks, hooks_for, load_source
from app.backup.packcheck import Located
from app.backup.prepare import LOCAL_LEASE, PreparedBackup, prepare_backup
from app.backup.result import BackupResult
from app.backup.unit import UnitOutcome, new_writer, run_unit
from app.context import Context
from app.errors import BackupFailedError, EquisplitError
from app.sources.watch import SizeWatch

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
    allow_shrink: bool = False,
) -> BackupResult:
    """Back up a registered source now, using every core of this machine: its units run on a pool of
    worker processes (BACKUP_PROCESSES, one per core), or on threads here when one process is all
    there is to use.

    A PostgreSQL source's session (pg_backup_start to pg_backup_stop) is held here for the whole
    backup. `checksum` re-reads every file; by default only PostgreSQL sources with
    BACKUP_PG_CHECKSUM_MODE do. `allow_shrink` confirms a source that shrank since its last complete
    backup (else the backup is `partial`, app/backup/shrink.py)."""
    source = load_source(ctx, source_name)
    hooks = hooks_for(source)
    if checksum is None:
        checksum = source.kind == "postgres" and ctx.settings.backup_pg_checksum_mode
    processes = forkserver.processes_for(ctx.settings)
    # Worker processes pay off for a big backup only (BACKUP_PROCESSES_MIN_BYTES); their fork server
    # starts once the walk has found that much, and imports the data path while the walk goes on.
    min_bytes = ctx.settings.backup_processes_min_bytes
    url = ctx.storage_url
    watch = SizeWatch(min_bytes, lambda: forkserver.warm_up(url)) if processes > 1 else None
    pool_used = False
    try:
        try:
            prepared = prepare_backup(
                ctx,
                source_name,
                backup_type,
                hooks=hooks,
                checksum=checksum,
                parallelism=processes,
                watch=watch,
                keep_plan=True,
                allow_shrink=allow_shrink,
            )
        except BaseException:
            hooks.close()
            raise
        if watch is None or not watch.fired or prepared.bytes_to_read < min_bytes:
            processes = 1
        pool_used = min(processes, len(prepared.units)) > 1
        return _run_prepared(ctx, prepared, hooks, processes, progress, actor)
    finally:
        if watch is not None and watch.fired:
            forkserver.stop_server(used=pool_used)


def _run_prepared(
    ctx: Context,
    prepared: PreparedBackup,
    hooks: SourceHooks,
    processes: int,
    progress: Callable[[int, int], None] | None,
    actor: str | None,
) -> BackupResult:
    heartbeat = Heartbeat(ctx, prepared.backup_id, prepared.lease, prepared.holder, LOCAL_LEASE)
    heartbeat.start()
    tracker = _Progress(progress, prepared.bytes_to_read)
    try:
        processes = min(processes, len(prepared.units))
        results: dict[int, dict[str, Any]] = {}
        if processes > 1:
            results = _run_units_in_processes(ctx, prepared, processes, tracker)
        elif prepared.units:
            results = _run_units_here(ctx, prepared, tracker)
        hooks.finish(
            ctx,
            prepared.backup_id,
            lambda: new_writer(
                ctx,
                prepared.backup_id,
                prepared.storage_class,
                tier=prepared.tier,
                retain_until=prepared.retain_until,
            ),
        )
        result = finalize_backup(
            ctx, prepared.backup_id, actor=actor, plan=prepared.plan, results=results, located=_located(prepared)
        )
    except BaseException as exc:
        hooks.close()  # before marking it failed: PostgreSQL ends the backup with its session
        fail_backup(ctx, prepared.backup_id, exc, actor=actor)
        if isinstance(exc, EquisplitError):
            raise
        raise BackupFailedError(f"backup {prepared.backup_id} of {prepared.source} failed: {exc}") from exc
    finally:
        hooks.close()
        heartbeat.stopped.set()
    result.job_id = prepared.job_id
    return result


def _located(prepared: PreparedBackup) -> Located | None:
    """Where the parent's chunks were when the backup started, if that lookup succeeded; else None, and
    finalize looks every chunk up itself (and meets whatever made the early lookup fail)."""
    if prepared.locating is None:
        return None
    try:
        return prepared.locating.result()
    except Exception:
        return None


def _kept_results(outcomes: list[UnitOutcome]) -> dict[int, dict[str, Any]]:
    """The units' results handed back in memory, by number."""
    return {o.number: o.result for o in outcomes if o.result is not None}


def _run_units_in_processes(
    ctx: Context, prepared: PreparedBackup, processes: int, tracker: _Progress
) -> dict[int, dict[str, Any]]:
    threads = max(1, ctx.settings.worker_threads // processes)
    # At most one chunk per minimum chunk size of each file, and one per small file.
    min_chunk = ctx.repository.chunker_params.min_size
    expected = prepared.files_to_read + prepared.bytes_to_read // min_chunk
    with procpool.UnitPool(ctx.handoff(), processes, threads, expected) as pool:
        outcomes = pool.run(
            prepared.backup_id,
            list(zip(prepared.units, prepared.unit_sizes, strict=True)),
            tracker.add,
            inputs=prepared.inputs,
        )
    return _kept_results(outcomes)


def _run_units_here(ctx: Context, prepared: PreparedBackup, tracker: _Progress) -> dict[int, dict[str, Any]]:
    """Every unit in this process, on one shared thread pool and pack writer."""
    inputs = prepared.inputs or {}
    writer = new_writer(
        ctx,
        prepared.backup_id,
        prepared.storage_class,
        tier=prepared.tier,
        retain_until=prepared.retain_until,
    )
    try:
        with (
            ThreadPoolExecutor(ctx.settings.worker_threads, thread_name_prefix="backup-read") as files,
            ThreadPoolExecutor(
                min(MAX_UNITS_IN_FLIGHT, len(prepared.units)), thread_name_prefix="backup-unit"
            ) as units,
        ):
            futures = [
                units.submit(
                    run_unit,
                    ctx,
                    prepared.backup_id,
                    n,
                    writer=writer,
                    pool=files,
                    progress=tracker.add,
                    input_doc=inputs.pop(n, None),
                    keep_result=prepared.inputs is not None,
                )
                for n in prepared.units
            ]
            outcomes = [future.result() for future in futures]
        writer.flush()
    finally:
        writer.close()
    return _kept_results(outcomes)
