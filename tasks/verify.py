"""Verification and drill tasks (queue `verify`): beat's daily incremental run, weekly sample and
restore drills, and ad-hoc
verification of one backup or source. Arguments are ids and names; the result is the run's summary."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from app.drills.run import run_drills
from app.timespec import parse_since
from app.verify.options import options_from_settings
from app.verify.run import verify_backups


def _summary(report: Any) -> dict[str, Any]:
    doc: dict[str, Any] = report.to_json()
    doc["backups"] = [b for b in doc["backups"] if b["outcome"] != "passed"]  # the damaged ones, named
    return doc


@shared_task(bind=True, name="tasks.verify.verify_backups")
def verify(
    self: Any,
    backup_id: str | None = None,
    source: str | None = None,
    since: str | None = None,
    data: str = "incremental",
) -> dict[str, Any]:
    options = options_from_settings(
        self.ctx.settings,
        backup_ids=(backup_id,) if backup_id else (),
        source=source,
        since=parse_since(since) if since else None,
        data=data,
    )
    return _summary(verify_backups(self.ctx, options, actor="celery"))


@shared_task(bind=True, name="tasks.verify.scheduled_verification")
def scheduled_verification(self: Any, data: str) -> dict[str, Any]:
    """Beat's run over every backup: `incremental` daily, `sample` weekly (BACKUP_SCHEDULE_VERIFY*)."""
    return _summary(
        verify_backups(self.ctx, options_from_settings(self.ctx.settings, data=data), actor="beat")
    )


@shared_task(bind=True, name="tasks.verify.run_drills")
def drills(self: Any, source: str | None = None, mode: str = "restore") -> list[dict[str, Any]]:
    """Restore drills of every source (or one): each drill's outcome and measured RTO."""
    return [r.to_json() for r in run_drills(self.ctx, source=source, mode=mode, actor="celery")]


@shared_task(bind=True, name="tasks.verify.scheduled_drills")
def scheduled_drills(self: Any) -> list[dict[str, Any]]:
    """Beat's drill of every source, per DR_TEST_FREQUENCY."""
    return [r.to_json() for r in run_drills(self.ctx, actor="beat")]
