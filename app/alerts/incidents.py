"""Incidents (docs/MONITORING.md section 3): the health issues reconciled with the open incidents, one
per condition key. A new key opens an incident (its channels owe an `open`), a worse severity escalates
it once (the critical channels owe an `escalate`), a key no longer reported resolves it (every channel
that heard of it owes a `resolve`). Then each owed message is sent; one that fails stays owed and is
tried again at the next evaluation."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app import clock
from app.alerts.channels import channels_for, close_channels, configured_channels
from app.alerts.message import ESCALATE, OPEN, RESOLVE, Alert, Channel
from app.catalog import incidents as rows
from app.catalog import locks
from app.catalog.db import transaction
from app.catalog.models import Incident
from app.context import Context
from app.errors import EquisplitError, LockedError, first_line
from app.monitoring.health import HealthIssue, HealthStatus, get_health_status

log = logging.getLogger("equisplit.alerts")
_RANK = {"warning": 1, "critical": 2}
#: How long a resolved incident's undelivered `resolve` is still tried.
RESOLVE_RETRY = timedelta(days=1)
LOCK = "alerts"


@dataclass
class AlertReport:
    status: str
    opened: list[str] = field(default_factory=list)
    escalated: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    open: list[str] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    #: Why nothing was evaluated (another evaluation held the lease), else None.
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return vars(self).copy()


def _worst(issues: list[HealthIssue]) -> dict[str, HealthIssue]:
    by_key: dict[str, HealthIssue] = {}
    for issue in issues:
        seen = by_key.get(issue.key)
        if seen is None or _RANK[issue.severity] > _RANK[seen.severity]:
            by_key[issue.key] = issue
    return by_key


def reconcile(
    session: Session, issues: list[HealthIssue], unknown: set[str], now: datetime, report: AlertReport
) -> None:
    """Open, escalate and resolve incidents so they match `issues`; conditions in `unknown` (their check
    failed) neither open nor resolve."""
    current = rows.open_incidents(session)
    for key, issue in _worst(issues).items():
        row = current.get(key)
        if row is None:
            session.add(
                Incident(
                    key=key,
                    condition=issue.condition,
                    source=issue.source,
                    severity=issue.severity,
                    message=issue.message,
                    opened_at=now,
                    last_seen_at=now,
                    notified=[],
                    pending=[f"{OPEN}:{c}" for c in channels_for(issue.condition, issue.severity)],
                )
            )
            report.opened.append(key)
            continue
        row.message, row.last_seen_at = issue.message, now
        if _RANK[issue.severity] > _RANK.get(row.severity, 0):
            row.severity, row.escalated_at = issue.severity, now
            row.pending = [
                *row.pending,
                *(f"{ESCALATE}:{c}" for c in channels_for(row.condition, issue.severity)),
            ]
            report.escalated.append(key)
    active = set(_worst(issues))
    for key, row in current.items():
        if key in active or row.condition in unknown:
            continue
        row.resolved_at = now
        kept = [p for p in row.pending if p.startswith(f"{RESOLVE}:")]
        row.pending = kept + [f"{RESOLVE}:{c}" for c in row.notified if f"{RESOLVE}:{c}" not in kept]
        report.resolved.append(key)


def _alert(row: Incident, action: str) -> Alert:
    return Alert(
        action=action,
        key=row.key,
        condition=row.condition,
        severity=row.severity,
        source=row.source,
        message=row.message,
        opened_at=clock.as_utc(row.opened_at),
    )


def deliver(ctx: Context, channels: dict[str, Channel], now: datetime, report: AlertReport) -> None:
    """Send every owed message; what fails stays owed (its error recorded, never a secret)."""
    with ctx.sessions() as session:
        owed = [(row.id, list(row.pending)) for row in rows.owing(session, now - RESOLVE_RETRY)]
    for incident_id, pending in owed:
        with ctx.sessions() as session:
            row = session.get(Incident, incident_id)
            assert row is not None
            alerts = {item: _alert(row, item.split(":", 1)[0]) for item in pending}
        done: list[str] = []
        error: str | None = None
        for item in pending:
            action, name = item.split(":", 1)
            channel = channels.get(name)
            if channel is None:  # not configured: nothing is owed to it
                done.append(item)
                continue
            try:
                channel.send(alerts[item])
            except EquisplitError as exc:
                error = exc.message
            except Exception as exc:  # a channel never stops the others
                error = f"{name}: {exc.__class__.__name__}: {first_line(exc)}"
            else:
                done.append(item)
                report.sent.append({"key": alerts[item].key, "action": action, "channel": name, "ok": True})
                continue
            report.sent.append(
                {"key": alerts[item].key, "action": action, "channel": name, "ok": False, "error": error}
            )
            log.warning("alert %s (%s) not delivered: %s", alerts[item].key, action, error)
        with transaction(ctx.sessions) as session:
            row = session.get(Incident, incident_id)
            assert row is not None
            row.pending = [p for p in row.pending if p not in done]
            heard = {
                p.split(":", 1)[1]
                for p in done
                if not p.startswith(f"{RESOLVE}:") and p.split(":", 1)[1] in channels
            }
            row.notified = sorted(set(row.notified) | heard)
            row.last_error = error


def evaluate_alerts(ctx: Context, health: HealthStatus | None = None) -> AlertReport:
    """Check health (unless given), reconcile the incidents and deliver what is owed. One evaluation at a
    time (a catalog lease), so two beat runs never open the same incident twice: while another holds
    it, this one does nothing and says so in `skipped`."""
    holder = locks.new_holder()
    try:
        locks.acquire(
            ctx.sessions, LOCK, holder, timedelta(seconds=4 * ctx.settings.health_check_timeout + 60)
        )
    except LockedError as exc:
        return AlertReport(status="unknown", skipped=exc.message)
    channels = configured_channels(ctx.settings)
    try:
        health = health if health is not None else get_health_status(ctx)
        report = AlertReport(status=health.status)
        now = clock.now()
        with transaction(ctx.sessions) as session:
            reconcile(session, health.issues, health.unknown_conditions, now, report)
        deliver(ctx, channels, now, report)
        with ctx.sessions() as session:
            report.open = sorted(rows.open_incidents(session))
    finally:
        close_channels(channels)
        locks.release(ctx.sessions, LOCK, holder)
    return report
