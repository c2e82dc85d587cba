"""Step 3 of a backup: merge the plan and the unit results into the manifest, then mark it complete.
Also the one way a backup fails: row, job, audit and lease in one place."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import func, select

from app import clock
from app.backup import manifests, objects
from app.backup.links import drop_dangling_links
from app.backup.packcheck import Located, PackCheck, check_entries, forget_packs
from app.backup.pieces import merge_pieces
from app.backup.result import BackupResult, is_partial
from app.backup.shrink import last_complete, shrink_warning
from app.catalog import audit, jobs, locks
from app.catalog.backups import backup_stats, record_postgres
from app.catalog.db import transaction
from app.catalog.models import Backup, BackupUnit, Pack, Source
from app.context import Context
from app.errors import BackupFailedError, EquisplitError, JobCancelledError
from app.repo.format import Tier

#: Unit results read at once by finalize.
OUTPUT_READERS = 4


def _release(ctx: Context, backup_id: str, source: str) -> None:
    from app.backup.prepare import lease_name
    from app.catalog.models import Lock

    with transaction(ctx.sessions) as session:
        lock = session.get(Lock, lease_name(source))
        holder = lock.holder if lock is not None and lock.holder.endswith(backup_id) else None
    if holder is not None:
        locks.release(ctx.sessions, lease_name(source), holder)


def finalize_backup(
    ctx: Context,
    backup_id: str,
    *,
    actor: str | None = None,
    plan: dict[str, Any] | None = None,
    results: dict[int, dict[str, Any]] | None = None,
    located: Located | None = None,
) -> BackupResult:
    """Write the manifest from the plan and every unit's result (each read from storage unless given:
    a backup run on one machine hands them over in memory); idempotent once complete. `located`: where
    the index put the parent's chunks when the backup started (app/backup/packcheck.py)."""
    results = results or {}
    repo = ctx.repository
    with ctx.sessions() as session:
        backup = session.get(Backup, backup_id)
        if backup is None:
            raise BackupFailedError(f"no backup {backup_id} to finalize")
        source = session.get(Source, backup.source_id)
        source_name = source.name if source else "?"
        source_options = dict(source.options) if source else {}
        if backup.state in ("complete", "partial"):
            return _result_of(backup, source_name)
        if backup.state != "running":
            raise BackupFailedError(f"backup {backup_id} is {backup.state}; it cannot be finalized")
        units = list(session.scalars(select(BackupUnit).where(BackupUnit.backup_id == backup_id)))
        pending = [u.number for u in units if u.state != "done"]
        if pending:
            raise BackupFailedError(f"backup {backup_id}: units {pending[:10]} are not done")
        stored, packs, new_chunks = session.execute(
            select(
                func.coalesce(func.sum(Pack.size), 0),
                func.count(Pack.id),
                func.coalesce(func.sum(Pack.chunk_count), 0),
            ).where(Pack.backup_id == backup_id)
        ).one()
        job = jobs.backup_job(session, backup_id)
        job_id = job.id if job else None
        previous = last_complete(session, backup.source_id, backup_id)
        if job is not None and job.state == "cancelled":
            raise JobCancelledError(f"backup {backup_id} was cancelled before it was finalized")
    # Everything handed over in memory and nothing extra: this backup stored no `units` object at all.
    stored_units = plan is None or any(u.number not in results for u in units) or bool(plan.get("extra"))
    if plan is None:
        plan = objects.read(repo, objects.plan_name(backup_id))
    entries: list[dict[str, Any]] = list(plan["entries"])
    errors: list[dict[str, str]] = list(plan["errors"])
    warnings: list[dict[str, str]] = list(plan["warnings"])
    bytes_read = bytes_new = 0
    read_entries: list[dict[str, Any]] = []
    unit_errors: list[dict[str, str]] = []
    # Read on threads, in unit order: each is a round trip (a GET on S3) on the serial stretch after the
    # last unit.
    numbers = sorted(u.number for u in units)
    with ThreadPoolExecutor(OUTPUT_READERS, thread_name_prefix="unit-output") as pool:
        for out in pool.map(
            lambda n: results.get(n) or objects.read(repo, objects.output_name(backup_id, n)), numbers
        ):
            read_entries.extend(out["entries"])
            unit_errors.extend(out["errors"])
            warnings.extend(out["warnings"])
            bytes_read += out["bytes_read"]
            bytes_new += out["bytes_new"]
    read_entries = merge_pieces(
        read_entries, unit_errors, warnings, expect_changes=plan.get("source_kind") == "postgres"
    )
    entries.extend(read_entries)
    errors.extend(unit_errors)
    extra: dict[str, Any] = {}
    if plan.get("extra"):
        extra = objects.read(repo, objects.extra_name(backup_id))
        entries.extend(extra["entries"])
        bytes_read += extra["bytes_read"]
        bytes_new += extra["bytes_new"]
    entries = drop_dangling_links(entries, errors)
    entries.sort(key=lambda e: e["path"])
    # Never complete while naming a pack storage lost: such files leave this manifest (named as
    # errors) and their packs the index, so the next backup reads and stores them again.
    pack_check = PackCheck(repo.storage)
    tier = plan.get("tier", Tier.STANDARD)
    refs = check_entries(ctx, entries, pack_check, backup_id=backup_id, tier=tier, located=located)
    if not refs.sound:
        forget_packs(ctx, refs.missing_packs, backup_id=backup_id, files_of=refs.files_of, actor=actor)
        entries = [e for e in entries if e["path"] not in refs.broken]
        errors.extend(
            {"path": path, "error": f"not backed up: {why}; the next backup stores it again"}
            for path, why in sorted(refs.broken.items())
        )
        entries = drop_dangling_links(entries, errors)  # a hard link to a file just dropped
    stored_entries = manifests.store_entries(ctx, backup_id, entries, pack_check)
    files = [e for e in entries if e["type"] == "file"]
    finished = clock.now()
    stats = {
        "files": len(files),
        "files_read": len(read_entries) + len(extra.get("entries", [])),
        "bytes_total": sum(e["size"] for e in files),
        "bytes_read": bytes_read,
        "bytes_new": bytes_new,
        "bytes_stored": int(stored),
        "chunks": sum(len(e["chunks"]) for e in files),
        "new_chunks": int(new_chunks),
        "packs": int(packs),
        "units": len(units),
    }
    stored_entries.count_in(stats)
    shrunk = shrink_warning(
        previous,
        stats["files"],
        stats["bytes_total"],
        ctx.settings.backup_shrink_warn_percent,
        allowed=bool(plan.get("allow_shrink")),
    )
    if shrunk is not None:
        warnings.append(shrunk)
    state = "partial" if is_partial(errors, warnings) else "complete"
    header: dict[str, Any] = {
        "id": backup_id,
        "source": source_name,
        "source_kind": plan.get("source_kind", "files"),
        "source_path": plan["root"],
        "type": plan["type"],
        "parent": plan["parent"],
        "state": state,
        "host": socket.gethostname(),
        "started_at": plan["started_at"],
        "finished_at": clock.iso(finished),
        "key_id": repo.keyring.current_key_id.hex(),
        "storage_class": plan["storage_class"],
        "tier": tier,
        **({"object_lock": {"mode": "COMPLIANCE", "retain_until": plan["retain_until"]}} if plan.get("retain_until") else {}),
        "stats": stats,
        "errors": errors,
        "warnings": warnings,
        "job": {"id": job_id, "actor": actor or audit.default_actor()},
        "source_options": source_options,
    }
    if plan.get("checksum"):
        header["checksum"] = True
    if "postgres" in extra:
        header["postgres"] = extra["postgres"]
    locked = clock.parse_iso(plan["retain_until"]) if plan.get("retain_until") else None
    stats["bytes_stored"] += manifests.write_root(repo, backup_id, header, stored_entries, locked)
    with transaction(ctx.sessions) as session:
        row = session.get(Backup, backup_id)
        assert row is not None
        row.state, row.finished_at = state, finished
        row.files_total, row.files_read = stats["files"], stats["files_read"]
        row.bytes_total, row.bytes_read = stats["bytes_total"], bytes_read
        row.bytes_new, row.bytes_stored = bytes_new, stats["bytes_stored"]
        row.chunk_count, row.new_chunk_count, row.pack_count = (
            stats["chunks"],
            stats["new_chunks"],
            stats["packs"],
        )
        row.errors = {"errors": errors, "warnings": warnings}
        if "postgres" in extra:
            record_postgres(row, extra["postgres"])
        if job_id:
            jobs.finish_job(session, job_id, "succeeded", progress={**stats, "units_done": len(units)})
        audit.append(
            session,
            "backup.created",
            backup_id,
            {
                "source": source_name,
                "type": plan["type"],
                "state": state,
                "parent": plan["parent"],
                "bytes_read": bytes_read,
                "bytes_stored": stats["bytes_stored"],
            },
            actor,
        )
    if stored_units:  # else nothing to list (a LIST on S3) or delete
        objects.delete_all(repo, backup_id)
    _release(ctx, backup_id, source_name)
    return BackupResult(
        backup_id, source_name, plan["type"], state, plan["parent"], stats, errors, warnings, job_id
    )


def fail_backup(ctx: Context, backup_id: str, exc: BaseException | str, *, actor: str | None = None) -> bool:
    """Mark the backup and its job failed (or cancelled), audit it, free the source. Idempotent: True
    only for the call that ended a running backup."""
    if isinstance(exc, str):
        message = exc
    elif isinstance(exc, EquisplitError):
        message = exc.message
    else:
        message = f"{exc.__class__.__name__}: {exc}"
    cancelled = isinstance(exc, JobCancelledError)
    with transaction(ctx.sessions) as session:
        row = session.get(Backup, backup_id)
        if row is None or row.state not in ("running",):
            return False
        row.state, row.finished_at, row.error = ("cancelled" if cancelled else "failed"), clock.now(), message
        source = session.get(Source, row.source_id)
        source_name = source.name if source else "?"
        job = jobs.backup_job(session, backup_id)
        if job is not None and job.state != "cancelled":
            jobs.finish_job(session, job.id, "failed", error=message)
        elif job is not None:
            job.finished_at, job.error = clock.now(), message
        audit.append(
            session,
            "backup.cancelled" if cancelled else "backup.failed",
            backup_id,
            {"source": source_name, "error": message},
            actor,
        )
    _release(ctx, backup_id, source_name)
    return True


def _result_of(backup: Backup, source: str) -> BackupResult:
    stats = backup_stats(backup)
    return BackupResult(
        backup.id,
        source,
        backup.type,
        backup.state,
        backup.parent_id,
        stats,
        backup.errors.get("errors", []),
        backup.errors.get("warnings", []),
    )
