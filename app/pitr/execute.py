"""Point-in-time recovery, end to end (docs/PITR.md): plan from the catalog, check every WAL file the
plan needs in storage, then (unless a dry run) restore the base backup in parallel, write the recovery
settings, and optionally start the server and watch recovery to its end. Nothing is written before the
plan and the checks have passed."""

from __future__ import annotations

import os
import pwd
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import select

from app import clock
from app.catalog import audit, backup_regions
from app.catalog import wal as catalog_wal
from app.catalog.db import transaction
from app.catalog.models import Backup
from app.catalog.sources import get_source
from app.context import Context
from app.errors import ConfigurationError, EquisplitError, IntegrityError, ObjectNotFoundError, RecoveryError
from app.pitr import server
from app.pitr.configure import chown_tree, configure, tablespaces_of
from app.pitr.history import parse_history
from app.pitr.options import RecoveryOptions, RecoveryResult
from app.pitr.plan import ArchivedSegment, BaseBackup, RecoveryPlan, choose_backup, make_plan
from app.pitr.target import RecoveryTarget
from app.pitr.watch import start_and_watch
from app.restore.engine import check_backup_data, restore_backup
from app.wal import lsn, segment

__all__ = ["RecoveryOptions", "RecoveryResult", "check_wal", "plan_recovery", "recover"]

#: Unix socket paths are limited to 107 bytes (`<dir>/.s.PGSQL.<port>` included).
MAX_SOCKET_DIR = 80


# Planning ---------------------------------------------------------------------------------------------


def plan_recovery(
    ctx: Context, source_name: str, target: RecoveryTarget, backup_id: str | None = None
) -> RecoveryPlan:
    """The plan from the catalog (and the archived timeline history files); RecoveryError if the
    target cannot be reached."""
    with ctx.sessions() as session:
        source = get_source(session, source_name)
        if source.kind != "postgres":
            raise RecoveryError(
                f"source {source_name} is a {source.kind} source; point-in-time recovery is for PostgreSQL",
                hint="restore a file tree with `equisplit-dr restore`",
            )
        if ctx.region is None:
            rows = list(
                session.scalars(
                    select(Backup).where(
                        Backup.source_id == source.id,
                        Backup.state == "complete",
                        Backup.pg_stop_lsn.is_not(None),
                    )
                )
            )
        else:  # what the region holds: not what its own policy dropped, and what only it still keeps
            rows = [
                b
                for b, _, state in backup_regions.in_region(session, ctx.region, source_name)
                if state == "complete" and b.pg_stop_lsn is not None
            ]
        backups = [_base_backup(row) for row in rows]
        history_files = catalog_wal.history_names(session, source.id)
        archive = catalog_wal.get_archive(session, source.id)
        source_id = source.id
    segment_size = archive.segment_size if archive else None
    if segment_size is None:
        raise RecoveryError(
            f"source {source_name} has no archived WAL",
            hint="set archive_command = 'equisplit-dr wal push %p --source NAME' on the server",
        )
    histories: dict[int, list[tuple[int, int]]] = {}
    for name, timeline in history_files:
        try:
            data = segment.read(ctx.repository, source_name, name)[1]
        except (ObjectNotFoundError, IntegrityError) as exc:
            raise RecoveryError(
                f"timeline history {name} of source {source_name} cannot be read from storage",
                detail=exc.message,
                hint="restore it from a replica; recovery cannot follow timelines without it",
            ) from None
        histories[timeline] = parse_history(timeline, data.decode(errors="replace"))
    # The backup first, then only the WAL from its start on: the archive may keep far more (retention
    # keeps WAL back to the oldest backup), and planning holds what recovery from this backup can use.
    backup = choose_backup(target, backups, histories, backup_id)
    with ctx.sessions() as session:
        wal_rows = catalog_wal.segments_from(session, source_id, lsn.segno_of(backup.start_lsn, segment_size))
    segments = [
        ArchivedSegment(r.name, r.timeline, r.segno, r.size, r.stored_size, r.written_at) for r in wal_rows
    ]
    del wal_rows
    return make_plan(source_name, target, [backup], segments, histories, segment_size, backup_id=backup.id)


def _base_backup(row: Backup) -> BaseBackup:
    assert row.pg_start_lsn and row.pg_stop_lsn and row.pg_timeline is not None
    return BaseBackup(
        id=row.id,
        type=row.type,
        timeline=int(row.pg_timeline),
        start_lsn=lsn.parse(row.pg_start_lsn),
        stop_lsn=lsn.parse(row.pg_stop_lsn),
        started_at=clock.as_utc(row.pg_started_at or row.started_at),
        stopped_at=clock.as_utc(row.pg_stopped_at or row.finished_at or row.started_at),
        bytes=row.bytes_total,
    )


def check_wal(ctx: Context, source: str, wal_names: list[str]) -> list[str]:
    """Every named WAL file read back from storage and verified (tag, meta, hash), in parallel: the
    problems found, each naming its file. Recovery must not start on a file it would fail on."""
    repo = ctx.repository

    def one(name: str) -> str | None:
        try:
            segment.read(repo, source, name)
        except ObjectNotFoundError:
            return f"WAL file {name} is missing from storage {repo.storage.location} (the catalog lists it)"
        except EquisplitError as exc:
            return f"WAL file {name} is corrupt in storage: {exc.message}"
        return None

    with ThreadPoolExecutor(max(1, min(8, ctx.settings.worker_threads))) as pool:
        return [problem for problem in pool.map(one, wal_names) if problem]


# Execution --------------------------------------------------------------------------------------------


def recover(
    ctx: Context,
    source: str,
    target: RecoveryTarget,
    options: RecoveryOptions,
    *,
    actor: str | None = None,
) -> RecoveryResult:
    """Plan, check, and (unless a dry run) restore and configure; with `options.start`, also start the
    server and return once recovery has ended and it accepts connections. Refusals raise RecoveryError
    before anything is written; a recovery that ran but failed returns `success=False`."""
    began = time.monotonic()
    target_dir = options.target_dir.expanduser().absolute()
    plan = plan_recovery(ctx, source, target, options.backup_id)
    check_backup_data(ctx, plan.backup.id)  # the manifest, every chunk and every pack (its size) are there
    plan.problems = check_wal(ctx, source, plan.history_files + plan.segments)
    result = RecoveryResult(False, plan, target_dir, options.dry_run, port=options.port)
    try:
        server.check_target_dir(target_dir)
        if tablespaces_of(ctx, plan):
            server.check_target_dir(options.tablespace_root(target_dir))
    except RecoveryError as exc:
        if not options.dry_run:
            raise
        plan.problems.append(exc.message)
    result.problems = list(plan.problems)
    result.plan_seconds = time.monotonic() - began
    if options.dry_run:
        result.success = not plan.problems
        result.message = "the plan can be carried out" if result.success else "recovery would be refused"
        return result
    if options.start and options.port is None:
        raise ConfigurationError(
            "starting the recovered server needs a port",
            hint="pass --port P: the recovered server must not take the source's port",
        )
    if plan.problems:
        raise RecoveryError(
            f"recovery refused: {len(plan.problems)} problem(s) with the WAL it needs; first: {plan.problems[0]}",
            detail="\n".join(plan.problems[:20]),
            hint="see `dr recover --dry-run`; restore the named files from a replica, or pick an earlier target",
        )
    owner = _owner(options.owner)
    tools = server.ServerTools(
        server.find_bin_dir(ctx.settings.pg_bin_dir, _major(ctx, plan)) if options.start else Path("."),
        owner if os.geteuid() == 0 else None,
    )
    if options.start and options.socket_dir is None and len(str(target_dir)) > MAX_SOCKET_DIR:
        options.socket_dir = Path(tempfile.mkdtemp(prefix="eqdr-pitr-", dir="/tmp"))
        if os.geteuid() == 0:
            chown_tree(options.socket_dir, owner)
    try:
        restore_backup(ctx, plan.backup.id, target_dir, actor=actor)
        configure(ctx, plan, target_dir, options, owner)
        result.restore_seconds = time.monotonic() - began - result.plan_seconds
        if options.start:
            result.started = True
            start_and_watch(ctx, plan, target_dir, options, tools, result)
            if result.success:
                _reapply_erasures(ctx, plan.source, target_dir, options, tools, result, actor)
        else:
            result.success = True
            result.message = f"restored and configured; start it with pg_ctl -D {target_dir} start"
            _warn_erasures_pending(ctx, plan.source, result)
    except RecoveryError as exc:
        result.success, result.message = False, exc.message
        if exc.detail:
            result.problems.append(exc.detail)
    # The recovery's own duration: plan, restore and replay up to the moment recovery ended (the checks
    # after it excluded); a failed recovery reports none.
    if result.success:
        result.rto_seconds = (
            result.plan_seconds + result.restore_seconds + result.recovery_seconds
            if result.started
            else time.monotonic() - began
        )
    _audit(ctx, plan, result, actor)
    return result


def _reapply_erasures(
    ctx: Context,
    source: str,
    target_dir: Path,
    options: RecoveryOptions,
    tools: server.ServerTools,
    result: RecoveryResult,
    actor: str | None,
) -> None:
    """The erasure ledger re-applied before the server is handed back; if a request fails, the server
    is stopped and the recovery fails: it would hand back erased data (docs/GDPR.md)."""
    from app.pitr.erasures import reapply_on_server

    report = reapply_on_server(ctx, source, target_dir, options, tools, actor)
    result.erasures = report.to_json()
    if not report.ok:
        server.stop(tools, target_dir)
        result.success = False
        result.message = report.describe() + "; the server was stopped"
        result.problems.append(report.describe())


def _warn_erasures_pending(ctx: Context, source: str, result: RecoveryResult) -> None:
    """Not started: nothing can be re-applied yet; say so loudly (the copy holds erased subjects)."""
    from app.gdpr.ledger import erasures_of

    with ctx.sessions() as session:
        pending = erasures_of(session, source)
    if pending:
        result.erasures = {
            "where": str(result.target_dir),
            "applied": [],
            "failed": [],
            "pending": [e["id"] for e in pending],
        }
        warning = (
            f"{len(pending)} erasure request(s) NOT re-applied: the server was not started; recover with --start "
            "(which re-applies them before handing the server back), or apply each `gdpr list` SQL before use"
        )
        result.problems.append(warning)
        result.message += f"; WARNING: {warning}"


def _major(ctx: Context, plan: RecoveryPlan) -> str:
    version = ctx.repository.read_manifest_header(plan.backup.id).get("postgres", {}).get("server_version")
    return str(int(version) // 10000) if version else "15"


def _owner(name: str | None) -> str:
    if name:
        return name
    if os.geteuid() == 0:
        return "postgres"
    return pwd.getpwuid(os.geteuid()).pw_name


def _audit(ctx: Context, plan: RecoveryPlan, result: RecoveryResult, actor: str | None) -> None:
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        audit.append(
            session,
            "pitr.recovered" if result.success else "pitr.failed",
            plan.backup.id,
            {
                "source": plan.source,
                "target": plan.target.to_json(),
                "target_dir": str(result.target_dir),
                "started": result.started,
                "restored_timestamp": clock.iso(result.restored_timestamp),
                "rto_seconds": result.rto_seconds,
                "message": result.message,
                "erasures": result.erasures,
            },
            actor,
        )
