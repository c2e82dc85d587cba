"""Run the drills (docs/DRILLS.md): one per source, each timed and recorded, failures alerted. A dry
run plans without writing: which backup each drill would restore and whether its objects are there."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from app import clock
from app.catalog import audit, drills
from app.catalog.backups import latest_backup
from app.catalog.db import transaction
from app.catalog.models import Backup, Source
from app.catalog.sources import get_source, list_sources
from app.context import Context
from app.drills.files import drill_files
from app.drills.postgres import drill_postgres
from app.drills.result import DrillResult
from app.drills.simulation import rebuilt_context
from app.errors import BackupNotFoundError, EquisplitError
from app.pitr.execute import recover
from app.pitr.options import RecoveryOptions
from app.pitr.target import LATEST, RecoveryTarget
from app.restore.engine import restore_backup

log = logging.getLogger(__name__)

MODES = ("restore", "full-simulation", "dry-run")


def drill_root(ctx: Context) -> Path:
    return (ctx.settings.backup_drill_dir or ctx.settings.home / "drills").expanduser().absolute()


def run_drills(
    ctx: Context,
    *,
    source: str | None = None,
    mode: str = "restore",
    owner: str | None = None,
    actor: str | None = None,
) -> list[DrillResult]:
    """One drill per source (or the one named); each is recorded unless a dry run."""
    with ctx.sessions() as session:
        chosen = [get_source(session, source)] if source else list(list_sources(session))
        for row in chosen:
            session.expunge(row)
    return [_drill(ctx, row, mode, owner, actor) for row in chosen]


def _drill(ctx: Context, source: Source, mode: str, owner: str | None, actor: str | None) -> DrillResult:
    result = DrillResult(
        id=drills.new_drill_id(),
        source=source.name,
        kind=source.kind,
        mode=mode,
        backup_id=None,
        started_at=clock.now(),
        rto_target_seconds=ctx.settings.rto_target,
    )
    scratch = drill_root(ctx) / result.id
    try:
        with ctx.sessions() as session:
            backup = latest_backup(session, source.id)
        if backup is None:
            raise BackupNotFoundError(f"source {source.name} has no restorable backup to drill")
        result.backup_id = backup.id
        if mode == "dry-run":
            _plan(ctx, source, backup.id, scratch, result)
        else:
            # others may pass through (a recovered PostgreSQL runs as its own OS user), never list
            drill_root(ctx).mkdir(parents=True, exist_ok=True, mode=0o711)
            if mode == "full-simulation":
                _simulate(ctx, source, backup.id, scratch, result, owner, actor)
            elif source.kind == "postgres":
                drill_postgres(ctx, source.name, scratch, result, owner=owner, actor=actor)
            else:
                drill_files(ctx, backup, scratch, result, actor=actor)
            result.outcome = "failed" if result.problems else "passed"
    except EquisplitError as exc:
        result.outcome = "failed"
        result.error = exc.message
    finally:
        if mode != "dry-run":
            shutil.rmtree(scratch, ignore_errors=True)
    if mode != "dry-run":  # a dry run writes nothing, the catalog included
        _record(ctx, source, result, actor)
    return result


def _simulate(
    ctx: Context,
    source: Source,
    backup_id: str,
    scratch: Path,
    result: DrillResult,
    owner: str | None,
    actor: str | None,
) -> None:
    """The catalog is lost as well: rebuild one from storage alone (backups, chunk index and the WAL
    archive), then restore or recover through it."""
    place = scratch.with_name(scratch.name + "-catalog")
    try:
        rebuilt, report = rebuilt_context(ctx, place)
        try:
            result.checks.append(
                f"rebuilt a catalog from storage alone: {report.backups} backup(s), {report.packs} pack(s), "
                f"{report.chunks} chunk(s)"
                + (f", {len(report.unreadable)} unreadable" if report.unreadable else "")
            )
            result.problems.extend(report.unreadable)
            with rebuilt.sessions() as session:
                backup = session.get(Backup, backup_id)
                if backup is not None:
                    session.expunge(backup)
            if backup is None:
                raise BackupNotFoundError(f"the catalog rebuilt from storage has no backup {backup_id}")
            if source.kind == "postgres":
                drill_postgres(rebuilt, source.name, scratch, result, owner=owner, actor=actor)
            else:
                drill_files(rebuilt, backup, scratch, result, actor=actor)
        finally:
            rebuilt.close()
    finally:
        shutil.rmtree(place, ignore_errors=True)


def _plan(ctx: Context, source: Source, backup_id: str, scratch: Path, result: DrillResult) -> None:
    """What the drill would restore, and whether every object it needs is in storage."""
    if source.kind == "postgres":
        recovery = recover(ctx, source.name, RecoveryTarget(LATEST), RecoveryOptions(scratch, dry_run=True))
        result.backup_id = recovery.plan.backup.id
        result.problems.extend(recovery.problems)
        result.checks.append(
            f"would recover from base backup {recovery.plan.backup.id} with {len(recovery.plan.segments)} WAL "
            f"segment(s), start it on a free port, run pg_amcheck and count every table's rows"
        )
    else:
        plan = restore_backup(ctx, backup_id, scratch, dry_run=True)
        result.files, result.bytes = plan.files, plan.bytes
        result.checks.append(
            f"would restore backup {backup_id}: {plan.files} file(s), {plan.bytes} bytes from {plan.packs} "
            "pack(s), every one of them in storage, and compare the tree with its manifest"
        )
    result.outcome = "failed" if result.problems else "planned"


def _record(ctx: Context, source: Source, result: DrillResult, actor: str | None) -> None:
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        drills.record_drill(
            session,
            drill_id=result.id,
            source_id=source.id,
            backup_id=result.backup_id,
            kind=result.kind,
            mode=result.mode,
            outcome=result.outcome,
            started_at=result.started_at,
            rto_seconds=result.rto_seconds,
            rto_target_seconds=result.rto_target_seconds,
            point_reached=result.point_reached,
            rpo_seconds=result.rpo_seconds,
            detail=result.detail(),
            error=result.error,
        )
        audit.append(
            session,
            "drill.finished",
            result.id,
            {
                "source": result.source,
                "backup": result.backup_id,
                "outcome": result.outcome,
                "rto_seconds": result.rto_seconds,
                "within_rto_target": result.within_target,
            },
            actor,
        )
    if result.outcome != "passed":
        log.error(
            "restore drill %s of source %s failed: %s",
            result.id,
            result.source,
            result.error or result.problems[:3],
        )
    elif result.within_target is False:
        log.error(
            "restore drill %s of source %s took %.0f s, over the RTO target of %d s",
            result.id,
            result.source,
            result.rto_seconds or 0,
            result.rto_target_seconds,
        )
