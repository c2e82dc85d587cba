"""How a backup run by the cluster fails: when a unit or the finalize step fails for good, the backup
and its job are failed at once with that step's own error, the source's lease is freed (the next run
can start), and one alert is raised. Every path here is idempotent: the first caller that ends the
running backup alerts, later ones find it ended and do nothing."""

from __future__ import annotations

from sqlalchemy import select

from app.backup.finalize import fail_backup
from app.catalog.models import Backup, BackupUnit, Source
from app.context import Context
from app.errors import EquisplitError, JobCancelledError, first_line
from app.monitoring import alerts


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
