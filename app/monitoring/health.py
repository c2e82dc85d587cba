"""The health status: per source, the age of the newest restorable backup and recent failures, graded
by the spec's thresholds (stale backup: warning after 8 h, critical after 12 h; a failure: warning)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from app import clock
from app.catalog.backups import latest_backup
from app.catalog.models import Backup, Job
from app.catalog.sources import list_sources
from app.catalog.verifications import damaged_backups
from app.context import Context
from app.replication.status import replication_status

STALE_WARNING = timedelta(hours=8)
STALE_CRITICAL = timedelta(hours=12)
FAILURE_WINDOW = timedelta(hours=24)
_RANK = {"healthy": 0, "warning": 1, "critical": 2}


@dataclass
class HealthIssue:
    severity: str
    source: str | None
    message: str


@dataclass
class HealthStatus:
    status: str
    checked_at: str
    issues: list[HealthIssue] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "checked_at": self.checked_at,
            "issues": [vars(i) for i in self.issues],
            "sources": self.sources,
        }


def get_health_status(ctx: Context) -> HealthStatus:
    now = clock.now()
    issues: list[HealthIssue] = []
    rows: list[dict[str, Any]] = []
    with ctx.sessions() as session:
        sources_by_id = {s.id: s.name for s in list_sources(session)}
        for source in list_sources(session):
            newest = latest_backup(session, source.id)
            age = now - clock.as_utc(newest.finished_at or newest.started_at) if newest else None
            failures = list(
                session.scalars(
                    select(Backup).where(
                        Backup.source_id == source.id,
                        Backup.state == "failed",
                        Backup.started_at >= now - FAILURE_WINDOW,
                    )
                )
            )
            rows.append(
                {
                    "source": source.name,
                    "last_backup": newest.id if newest else None,
                    "age_seconds": int(age.total_seconds()) if age else None,
                    "failures_24h": len(failures),
                }
            )
            if newest is None:
                issues.append(HealthIssue("warning", source.name, "no restorable backup yet"))
            elif age is not None and age > STALE_CRITICAL:
                issues.append(HealthIssue("critical", source.name, f"newest backup is {age} old (> 12 h)"))
            elif age is not None and age > STALE_WARNING:
                issues.append(HealthIssue("warning", source.name, f"newest backup is {age} old (> 8 h)"))
            if failures:
                severity = "critical" if len(failures) >= 3 else "warning"
                issues.append(
                    HealthIssue(
                        severity,
                        source.name,
                        f"{len(failures)} failed backup(s) in 24 h: "
                        f"{failures[-1].error or 'no error recorded'}",
                    )
                )
        for damaged in damaged_backups(session):
            issues.append(
                HealthIssue(
                    "critical",
                    sources_by_id.get(damaged.source_id),
                    f"backup {damaged.id} is damaged (found by verification at {clock.iso(damaged.damaged_at)}): "
                    "see `equisplit-dr backup verify --id " + damaged.id + "`",
                )
            )
        stuck = session.scalars(select(Job).where(Job.state == "running")).all()
        for job in stuck:
            beat = job.heartbeat_at or job.started_at
            if beat is not None and now - clock.as_utc(beat) > timedelta(
                seconds=ctx.settings.job_stale_seconds
            ):
                issues.append(
                    HealthIssue("warning", None, f"job {job.id} has had no heartbeat since {clock.iso(beat)}")
                )
    issues.extend(replication_issues(ctx))
    worst = max((_RANK[i.severity] for i in issues), default=0)
    status = next(k for k, v in _RANK.items() if v == worst)
    return HealthStatus(status, clock.iso(now) or "", issues, rows)


def replication_issues(ctx: Context) -> list[HealthIssue]:
    """A region whose replication lag is past the target: warning; past twice the target: critical."""
    issues = []
    for region in replication_status(ctx):
        if not region.lag_exceeded:
            continue
        severity = "critical" if region.lag_seconds > 2 * region.lag_target_seconds else "warning"
        why = f"; last error: {region.last_error}" if region.last_error else ""
        issues.append(
            HealthIssue(
                severity,
                None,
                f"replication to region {region.region} lags {region.lag_seconds} s "
                f"(target {region.lag_target_seconds} s){why}",
            )
        )
    return issues
