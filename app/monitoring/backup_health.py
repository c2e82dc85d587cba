"""Health checks of backups: a stale or missing backup per source, consecutive failed backups, damage
found by verification or a verification run that failed, and jobs without a heartbeat."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from app import clock
from app.catalog.backups import USABLE_STATES, latest_backup
from app.catalog.models import Backup, Job
from app.catalog.sources import list_sources
from app.catalog.verifications import damaged_backups, last_runs
from app.context import Context
from app.monitoring.health import CheckResult, HealthIssue
from app.monitoring.thresholds import Thresholds

#: Backups looked at per source when counting failures in a row (the count stops there).
FAILURE_LOOKBACK = 50


def _hours(seconds: int) -> str:
    return f"{seconds / 3600:g} h"


def consecutive_failures(rows: list[Backup]) -> list[Backup]:
    """The failed backups newer than the newest usable one (`rows` newest first); running, cancelled
    and deleted ones neither count nor break the run."""
    failed = []
    for row in rows:
        if row.state in USABLE_STATES:
            break
        if row.state == "failed":
            failed.append(row)
    return failed


def check_backups(ctx: Context, limits: Thresholds, now: datetime) -> CheckResult:
    result = CheckResult()
    rows: list[dict[str, Any]] = []
    with ctx.sessions() as session:
        for source in list_sources(session):
            newest = latest_backup(session, source.id)
            age = now - clock.as_utc(newest.finished_at or newest.started_at) if newest else None
            recent = list(
                session.scalars(
                    select(Backup)
                    .where(Backup.source_id == source.id)
                    .order_by(Backup.started_at.desc(), Backup.id.desc())
                    .limit(FAILURE_LOOKBACK)
                )
            )
            failures = consecutive_failures(recent)
            rows.append(
                {
                    "source": source.name,
                    "last_backup": newest.id if newest else None,
                    "age_seconds": int(age.total_seconds()) if age else None,
                    "failures_in_a_row": len(failures),
                }
            )
            if newest is None:
                result.issues.append(
                    HealthIssue("warning", source.name, "no restorable backup yet", condition="no_backup")
                )
            elif age is not None and age > limits.stale_critical:
                result.issues.append(
                    HealthIssue(
                        "critical",
                        source.name,
                        f"newest backup {newest.id} is {_age(age)} old (> {_hours(limits.stale_critical_seconds)})",
                        condition="stale_backup",
                    )
                )
            elif age is not None and age > limits.stale_warning:
                result.issues.append(
                    HealthIssue(
                        "warning",
                        source.name,
                        f"newest backup {newest.id} is {_age(age)} old (> {_hours(limits.stale_warning_seconds)})",
                        condition="stale_backup",
                    )
                )
            if len(failures) >= limits.backup_failures_alert:
                severity = "critical" if len(failures) >= limits.backup_failures_escalate else "warning"
                result.issues.append(
                    HealthIssue(
                        severity,
                        source.name,
                        f"{len(failures)} failed backup(s) in a row, the last {failures[0].id}: "
                        f"{failures[0].error or 'no error recorded'}",
                        condition="backup_failed",
                    )
                )
    result.figures["sources"] = rows
    return result


def check_verification(ctx: Context, limits: Thresholds, now: datetime) -> CheckResult:
    result = CheckResult()
    with ctx.sessions() as session:
        names = {s.id: s.name for s in list_sources(session)}
        for damaged in damaged_backups(session):
            result.issues.append(
                HealthIssue(
                    "critical",
                    names.get(damaged.source_id),
                    f"backup {damaged.id} is damaged (found by verification at {clock.iso(damaged.damaged_at)}): "
                    f"see `equisplit-dr backup verify --id {damaged.id}`",
                    condition="verification_failed",
                    subject=damaged.id,
                )
            )
        runs = last_runs(session, limit=1)
        if runs and runs[0].outcome == "failed":
            run = runs[0]
            result.issues.append(
                HealthIssue(
                    "critical",
                    None,
                    f"verification {run.id} failed: {run.error or 'no error recorded'}",
                    condition="verification_failed",
                    subject="run",
                )
            )
        if runs:
            result.figures["last_verification"] = {
                "id": runs[0].id,
                "outcome": runs[0].outcome,
                "at": clock.iso(runs[0].finished_at or runs[0].started_at),
            }
    return result


def check_jobs(ctx: Context, limits: Thresholds, now: datetime) -> CheckResult:
    result = CheckResult()
    with ctx.sessions() as session:
        for job in session.scalars(select(Job).where(Job.state == "running")):
            beat = job.heartbeat_at or job.started_at
            if beat is not None and now - clock.as_utc(beat) > timedelta(seconds=limits.job_stale_seconds):
                result.issues.append(
                    HealthIssue(
                        "warning",
                        None,
                        f"job {job.id} has had no heartbeat since {clock.iso(beat)}",
                        condition="stuck_job",
                        subject=job.id,
                    )
                )
    return result


def _age(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
