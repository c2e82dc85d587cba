"""Restore a backup (or some of its paths) into a directory: the checks that decide every refusal
before anything is written, the job and audit records around it, and its worker processes started as
early as they can be. The plan is app/restore/plan.py, the writing app/restore/writer.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from app import forkserver
from app.archive.thaw import thaw_for_backup
from app.catalog import audit, backup_regions, jobs
from app.catalog.backups import resolve
from app.catalog.db import transaction
from app.catalog.readers import registered_reader
from app.context import Context
from app.errors import ConfigurationError, EquisplitError, RestoreTargetError
from app.restore.plan import RestorePlan, locate, select, worker_processes
from app.restore.preflight import check_packs
from app.restore.target import (
    check_target,
    mark_unfinished,
    normalise_selection,
    remove_partials,
    restore_identity,
    resumes,
    scan,
)
from app.restore.writer import write_entries
from app.sources.files import ROOT_PATH

__all__ = ["RestorePlan", "check_backup_data", "finish_restore_job", "restore_backup"]


@registered_reader("restore")
def restore_backup(
    ctx: Context,
    selector: str,
    target: Path,
    *,
    source: str | None = None,
    paths: list[str] | None = None,
    dry_run: bool = False,
    overwrite: bool = False,
    skip_existing: bool = False,
    keep_partial: bool = False,
    progress: Callable[[int, int], None] | None = None,
    actor: str | None = None,
    request_only: bool = False,
) -> RestorePlan:
    """Restore `selector` (a backup id or `latest` of `source`) into `target`. Every refusal (an
    unsafe or non-empty target, an entry of another kind in the way) is decided before anything is
    written, and a dry run makes the same ones. A non-empty target needs `overwrite` (replace what
    the backup holds) or `skip_existing` (restore only what is missing); docs/RESTORE.md. An archive in
    GLACIER or DEEP_ARCHIVE has its packs thawed first (docs/ARCHIVE.md); `request_only` requests the
    thaw and returns, writing nothing. Registered as a running reader while it runs (garbage collection
    keeps the packs it may have located: docs/GC.md)."""
    from app.catalog.sources import get_source

    if overwrite and skip_existing:
        raise ConfigurationError(
            "--overwrite and --skip-existing exclude each other",
            hint="--overwrite replaces what the target holds, --skip-existing leaves it; pick one",
        )
    with ctx.sessions() as session:
        source_id = get_source(session, source).id if source else None
        backup = resolve(session, selector, source_id)
        from app.catalog.models import Source

        src = session.get(Source, backup.source_id)
        source_name = src.name if src else "?"
        fate = backup_regions.state_in(session, backup.id, ctx.region) if ctx.region else None
    if fate is not None and fate.state == backup_regions.DELETED:
        raise RestoreTargetError(
            f"backup {backup.id} was deleted in region {ctx.region} by that region's retention policy",
            hint="restore it from the primary (without --from-region) or from another region that keeps it",
        )
    only_in_region = fate is not None and fate.state == backup_regions.KEPT
    if backup.state not in ("complete", "partial") and not only_in_region:
        raise RestoreTargetError(
            f"backup {backup.id} is {backup.state}, not restorable",
            hint="pick a complete backup from `equisplit-dr backup list`"
            + (
                ""
                if ctx.region
                else "; `retention plan --json` names the regions still keeping a deleted one"
            ),
        )
    target = target.expanduser().resolve()
    wanted = normalise_selection(paths)
    identity = restore_identity(backup.id, wanted)
    # the same restore left unfinished (a failure, a lost worker) resumes, replacing what it wrote
    resuming = resumes(target, identity, allow_existing=overwrite or skip_existing)
    occupied = check_target(target, allow_existing=overwrite or skip_existing or resuming)
    manifest = ctx.repository.read_manifest(backup.id, cached=True)  # root from storage, entries cached
    entries = select(manifest, wanted)
    # Worker processes for a big restore (docs/BACKUP.md, "Using every core"): the fork server starts
    # now, so its imports overlap the target scan, the chunks' lookup, the job row and the directories.
    processes = 1 if dry_run or request_only else worker_processes(ctx, entries)
    warmed = processes > 1
    if warmed:
        forkserver.warm_up(ctx.storage_url, forkserver.RESTORE_PRELOAD)
    try:
        existing: dict[str, str] = {}
        if occupied:
            existing = scan(target, entries, replace=overwrite or resuming)
            if skip_existing:
                entries = [e for e in entries if e["path"] not in existing]
                processes = min(processes, worker_processes(ctx, entries))
        plan, where = locate(ctx, backup.id, source_name, manifest, entries)
        there = len(existing.keys() - {ROOT_PATH})  # the target itself is not counted
        plan.skipped = there if skip_existing else 0
        plan.replaced = there if overwrite else 0
        if dry_run:
            check_packs(ctx, entries, where)
            return plan
        # Cold packs in a class that must be thawed: requested and waited for before the target is touched.
        thawed = thaw_for_backup(
            ctx.storage,
            ctx.settings,
            manifest["backup"],
            {loc.pack_id for loc in where.values()},
            request_only=request_only,
        )
        plan.thaw = thawed.to_json() if thawed else None
        if request_only:
            return plan
    except BaseException:
        if warmed:
            forkserver.stop_server(used=False)  # never forked a worker: killed, not waited for
        raise
    if warmed and processes == 1:  # started for more than --skip-existing left to restore
        forkserver.stop_server(used=False)
    plan.processes = processes
    if resuming:
        remove_partials(target)  # the unfinished run's files in progress, under names of their own
    mark_unfinished(target, identity)
    with transaction(ctx.sessions) as session:
        job_id = jobs.start_job(session, "restore", source_id=backup.source_id, backup_id=backup.id).id
        # Initiated, not only executed: a restore that dies half-way leaves its start in the trail.
        detail = {
            "job": job_id,
            "target": str(target),
            "files": plan.files,
            "bytes": plan.bytes,
            "paths": wanted,
        }
        audit.append(session, "restore.started", backup.id, detail, actor)
    try:
        try:
            plan.warnings = write_entries(
                ctx,
                target,
                entries,
                where,
                progress,
                keep_partial,
                ctx.settings.worker_threads,
                processes,
                overwrite=overwrite or resuming,
            )
        finally:
            if processes > 1:
                forkserver.stop_server(used=True)
    except BaseException as exc:
        message = exc.message if isinstance(exc, EquisplitError) else f"{exc.__class__.__name__}: {exc}"
        finish_restore_job(
            ctx,
            job_id,
            backup.id,
            "restore.failed",
            {"target": str(target), "error": message},
            actor,
            message,
        )
        raise
    finish_restore_job(
        ctx,
        job_id,
        backup.id,
        "restore.completed",
        {
            "target": str(target),
            "files": plan.files,
            "bytes": plan.bytes,
            "paths": wanted,
            **({"warnings": plan.warnings} if plan.warnings else {}),
        },
        actor,
    )
    return plan


def check_backup_data(ctx: Context, backup_id: str) -> RestorePlan:
    """The data half of a dry run, for callers that check their target themselves (a PITR recovery):
    the manifest reads, the catalog locates every chunk, every pack is in storage at its size."""
    with ctx.sessions() as session:
        backup = resolve(session, backup_id, None)
    manifest = ctx.repository.read_manifest(backup.id)  # its header says the tier of its chunks
    entries = select(manifest, None)
    plan, where = locate(ctx, backup.id, "?", manifest, entries)
    check_packs(ctx, entries, where)
    return plan


def finish_restore_job(
    ctx: Context,
    job_id: str,
    backup_id: str,
    action: str,
    detail: dict[str, Any],
    actor: str | None,
    error: str | None = None,
) -> None:
    """Close a restore's (or an import's) job and audit it, in one transaction; the job's progress is
    the detail's `files` and `bytes`."""
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        jobs.finish_job(
            session,
            job_id,
            "failed" if error else "succeeded",
            error=error,
            progress={k: v for k, v in detail.items() if k in ("files", "bytes")},
        )
        audit.append(session, action, backup_id, detail, actor)
