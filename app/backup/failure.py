"""How a backup run by the cluster fails or is skipped. When a unit or the finalize step fails for
good, the backup and its job are failed at once with that step's own error, the source's lease is freed
(the next run can start), and one alert is raised. Every path here is idempotent: the first caller that
ends the running backup alerts, later ones find it ended and do nothing. A scheduled run that finds its
source locked is skipped: logged, and a `skipped` job in the ledger says why."""

from __future__ import annotations

import logging

from sqlalchemy import select

from app.backup.finalize import fail_backup
from app.catalog import jobs
from app.catalog.db import transaction
from app.catalog.models import Backup, BackupUnit, Source
from app.context import Context
from app.errors import EquisplitError, JobCancelledError, first_line
from app.monitoring import alerts

log = logging.getLogger(__name__)


def describe(exc: BaseException) -> str:
    """One line naming what went wrong: an EquisplitError's message, else the type and the text."""
    if isinstance(exc, EquisplitError):
        return exc.message
    return f"{exc.__class__.__name__}: {first_line(exc)}"


def fail_for_unit(ctx: Context, backup_id: str, number: int, exc: BaseException, *, actor: str) -> bool:
    """Unit `number` failed for good (no retry left): fail its backup now, not when every other unit
    has come back, with the unit's error. A cancelled job's unit leaves the cancellation as it is."""
    if isinstance(exc, JobCancelledError):
        return fail_backup(ctx, backup_id, exc, actor=actor)
    return _fail(ctx, backup_id, f"unit {number} failed: {describe(exc)}", actor=actor)


def fail_for_step(ctx: Context, backup_id: str, exc: BaseException | None, *, actor: str) -> bool:
    """The chord of `backup_id` failed (a unit, or the finalize step): fail the backup with the first
    failed unit's own error as the catalog recorded it, else with `exc`'s."""
    with ctx.sessions() as session:
        failed = session.scalars(
            select(BackupUnit)
            .where(BackupUnit.backup_id == backup_id, BackupUnit.state == "failed")
            .order_by(BackupUnit.number)
            .limit(1)
        ).first()
        unit = (failed.number, failed.error) if failed is not None else None
    if isinstance(exc, JobCancelledError):
        return fail_backup(ctx, backup_id, exc, actor=actor)
    if unit is not None:
        message = f"unit {unit[0]} failed: {first_line(Exception(unit[1] or 'no error recorded'))}"
    elif exc is not None:
        message = describe(exc)
    else:
        message = "a step of the backup failed and left no error"
    return _fail(ctx, backup_id, message, actor=actor)


def _fail(ctx: Context, backup_id: str, message: str, *, actor: str) -> bool:
    if not fail_backup(ctx, backup_id, message, actor=actor):
        return False
    with ctx.sessions() as session:
        source = session.scalar(
            select(Source.name).join(Backup, Backup.source_id == Source.id).where(Backup.id == backup_id)
        )
    alerts.backup_failed(backup_id, source or "?", message)
    return True


def skip_backup(ctx: Context, source: str, backup_type: str, reason: str) -> str:
    """Record that a scheduled `backup_type` backup of `source` did not start, and why; its job id."""
    with transaction(ctx.sessions) as session:
        source_id = session.scalar(select(Source.id).where(Source.name == source))
        job = jobs.record_skipped(session, "backup", source_id=source_id, reason=reason)
        job_id = job.id
    log.warning("scheduled %s backup of source %s skipped (job %s): %s", backup_type, source, job_id, reason)
    return job_id
