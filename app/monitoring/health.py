"""The health status (`dr health-check`, the beat task, `BackupScheduler.get_health_status()`): every
condition of the spec's alert table checked against the thresholds (app/monitoring/thresholds.py), each
check bounded by HEALTH_CHECK_TIMEOUT. An issue names its condition, so alerts can follow it as an
incident from open to resolve (app/alerts/)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app import clock
from app.context import Context
from app.errors import EquisplitError, first_line
from app.monitoring.thresholds import Thresholds, thresholds

_RANK = {"healthy": 0, "warning": 1, "critical": 2}


@dataclass
class HealthIssue:
    severity: str  # warning | critical
    source: str | None
    message: str
    #: The condition of the alert table: backup_failed, stale_backup, no_backup, verification_failed,
    #: storage_utilisation, replication_lag, rpo_breach, rto_breach, drill_failed, restore_unverified,
    #: orphaned_objects, stuck_job, audit_tampered, check_failed.
    condition: str = "other"
    #: What the condition is about beyond the source (a backup id, a region, a check's name).
    subject: str | None = None

    @property
    def key(self) -> str:
        """The incident key: one incident per key until it clears."""
        return f"{self.condition}:{self.subject or self.source or '*'}"

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "source": self.source,
            "message": self.message,
            "condition": self.condition,
            "key": self.key,
        }


@dataclass
class HealthStatus:
    status: str
    checked_at: str
    issues: list[HealthIssue] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def unknown_conditions(self) -> set[str]:
        """Conditions whose check failed or timed out this time."""
        return {
            condition
            for name, check in self.checks.items()
            if not check.get("ok")
            for condition in CHECK_CONDITIONS.get(name, ())
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "checked_at": self.checked_at,
            "issues": [i.to_json() for i in self.issues],
            "sources": self.sources,
            "checks": self.checks,
        }


@dataclass
class CheckResult:
    issues: list[HealthIssue] = field(default_factory=list)
    #: Figures worth showing beside the issues (JSON-ready), e.g. the per-source rows.
    figures: dict[str, Any] = field(default_factory=dict)


Check = Callable[[Context, Thresholds, datetime], CheckResult]

#: The conditions each check can raise: when a check fails or times out, these are unknown, and an
#: open incident of theirs stays open (it is not resolved for want of evidence).
CHECK_CONDITIONS: dict[str, tuple[str, ...]] = {
    "backups": ("no_backup", "stale_backup", "backup_failed"),
    "verification": ("verification_failed",),
    "jobs": ("stuck_job",),
    "rpo": ("rpo_breach",),
    "drills": ("drill_failed", "rto_breach", "restore_unverified"),
    "storage": ("storage_utilisation",),
    "orphans": ("orphaned_objects",),
    "replication": ("replication_lag",),
    "audit": ("audit_tampered",),
}


def registered_checks() -> dict[str, Check]:
    """Every health check by name. A new condition (e.g. replication lag) adds its check here."""
    from app.monitoring import (
        audit_health,
        backup_health,
        recovery_health,
        replication_health,
        storage_health,
    )

    return {
        "backups": backup_health.check_backups,
        "verification": backup_health.check_verification,
        "jobs": backup_health.check_jobs,
        "rpo": recovery_health.check_rpo,
        "drills": recovery_health.check_drills,
        "storage": storage_health.check_utilisation,
        "orphans": storage_health.check_orphans,
        "replication": replication_health.check_replication,
        "audit": audit_health.check_audit_trail,
    }


def get_health_status(ctx: Context, checks: dict[str, Check] | None = None) -> HealthStatus:
    """Run every check at once, each bounded by HEALTH_CHECK_TIMEOUT: a check that does not answer in
    time, or fails, is itself an issue (never "healthy" without evidence)."""
    now = clock.now()
    limits = thresholds(ctx.settings)
    chosen = checks if checks is not None else registered_checks()
    results: dict[str, CheckResult | BaseException] = {}
    began: dict[str, float] = {}
    ended: dict[str, float] = {}

    def run(name: str, check: Check) -> None:
        try:
            results[name] = check(ctx, limits, now)
        except BaseException as exc:  # reported as an issue below
            results[name] = exc
        ended[name] = time.monotonic()

    threads = []
    for name, check in chosen.items():
        began[name] = time.monotonic()
        thread = threading.Thread(target=run, args=(name, check), name=f"health-{name}", daemon=True)
        thread.start()
        threads.append((name, thread))
    deadline = time.monotonic() + limits.check_timeout_seconds
    issues: list[HealthIssue] = []
    sources: list[dict[str, Any]] = []
    summary: dict[str, dict[str, Any]] = {}
    for name, thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        outcome = results.get(name)
        if outcome is None:
            issues.append(
                HealthIssue(
                    "warning",
                    None,
                    f"health check {name!r} did not answer within HEALTH_CHECK_TIMEOUT "
                    f"({limits.check_timeout_seconds} s): its conditions are unknown",
                    condition="check_failed",
                    subject=name,
                )
            )
            summary[name] = {"ok": False, "detail": "timed out"}
            continue
        seconds = round(ended[name] - began[name], 3)
        if isinstance(outcome, BaseException):
            detail = (
                outcome.message
                if isinstance(outcome, EquisplitError)
                else f"{outcome.__class__.__name__}: {first_line(outcome)}"
            )
            issues.append(
                HealthIssue(
                    "warning",
                    None,
                    f"health check {name!r} failed: {detail}",
                    condition="check_failed",
                    subject=name,
                )
            )
            summary[name] = {"ok": False, "seconds": seconds, "detail": detail}
            continue
        issues.extend(outcome.issues)
        sources.extend(outcome.figures.pop("sources", []))
        summary[name] = {"ok": True, "seconds": seconds, "issues": len(outcome.issues), **outcome.figures}
    worst = max((_RANK[i.severity] for i in issues), default=0)
    status = next(k for k, v in _RANK.items() if v == worst)
    return HealthStatus(status, clock.iso(now) or "", issues, sources, summary)
