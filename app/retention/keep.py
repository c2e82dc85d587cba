"""Why each backup is kept: pure, from the backups, the policy and the time (docs/RETENTION.md).

Rules are applied per source and series (a source's logical exports are a series of their own), as
restic's `forget --keep-*` does: a GFS rule keeps the newest backup of each of the last N periods that
have a backup, so days without backups never use up a rule, and a clock set in the future cannot make
old backups look older: every time window is measured back from the series' newest backup that is not
after now, never from now alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.retention.policy import RetentionPolicy

LOGICAL = "logical"


@dataclass(frozen=True)
class Candidate:
    """A backup as retention sees it."""

    id: str
    source: str
    type: str
    started_at: datetime  # aware, UTC
    postgres_stopped_at: datetime | None = (
        None  # a PostgreSQL base backup's end (its first recoverable point)
    )
    damaged: bool = False
    #: Partial (a file could not be read, or the source shrank without confirmation): kept by time
    #: windows and holds, but never fills a GFS or minimum rule, so partial runs cannot push out whole ones.
    partial: bool = False
    hold: str | None = None  # the reason of the legal hold on it (or on its source), if any


_PERIODS: dict[str, Callable[[datetime], Any]] = {
    "daily": lambda t: t.date(),
    "weekly": lambda t: t.isocalendar()[:2],
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: t.year,
}


def keep_reasons(
    candidates: Iterable[Candidate], policy: RetentionPolicy, now: datetime
) -> dict[str, list[str]]:
    """Every candidate's id with the reasons that keep it; an empty list means it may be deleted."""
    reasons: dict[str, list[str]] = {}
    series: dict[tuple[str, bool], list[Candidate]] = {}
    for c in candidates:
        reasons[c.id] = []
        series.setdefault((c.source, c.type == LOGICAL), []).append(c)
    for members in series.values():
        _keep_series(sorted(members, key=lambda c: (c.started_at, c.id), reverse=True), policy, now, reasons)
    return reasons


def _keep_series(
    newest_first: Sequence[Candidate], policy: RetentionPolicy, now: datetime, reasons: dict[str, list[str]]
) -> None:
    present = [c for c in newest_first if c.started_at <= now]
    anchor = present[0].started_at if present else now
    for c in newest_first:
        if c.started_at > now:
            reasons[c.id].append("dated after now (clock skew?): kept until the clock passes it")
        if c.hold:
            reasons[c.id].append(f"legal hold: {c.hold}")
        if policy.within and anchor - c.started_at <= policy.within:
            reasons[c.id].append(f"within {_span(policy.within)} of the newest backup")
        if c.type == "archive" and c.started_at > _years_before(anchor, policy.archive_years):
            reasons[c.id].append(f"archive, kept {policy.archive_years} years")
    whole = [c for c in present if not c.damaged and not c.partial]  # only whole backups satisfy a rule
    for c in whole[: policy.minimum]:
        reasons[c.id].append(f"minimum: one of the {policy.minimum} newest")
    for rule, period_of in _PERIODS.items():
        count = getattr(policy, rule)
        seen: list[Any] = []
        for c in whole:
            period = period_of(c.started_at.astimezone(UTC))
            if period in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(period)
            reasons[c.id].append(f"{rule} {_label(rule, period)}")
    _keep_pitr_window(whole, anchor - policy.pitr_window, policy, reasons)


def _keep_pitr_window(
    whole: Sequence[Candidate], window_start: datetime, policy: RetentionPolicy, reasons: dict[str, list[str]]
) -> None:
    """Every base backup that a recovery to a point inside the window may start from: those that ended
    inside it, and the newest that ended before it (for the window's first moments)."""
    bases = [c for c in whole if c.postgres_stopped_at is not None]
    days = round(policy.pitr_window.total_seconds() / 86400)
    for c in bases:
        assert c.postgres_stopped_at is not None
        if c.postgres_stopped_at >= window_start:
            reasons[c.id].append(f"point-in-time recovery window ({days} days)")
    before = [c for c in bases if c.postgres_stopped_at is not None and c.postgres_stopped_at < window_start]
    if before:
        reasons[before[0].id].append(f"base of the point-in-time recovery window's start ({days} days)")


def _years_before(t: datetime, years: int) -> datetime:
    try:
        return t.replace(year=t.year - years)
    except ValueError:  # 29 February
        return t.replace(year=t.year - years, day=28)


def _span(delta: Any) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:g} days" if hours >= 48 else f"{hours:g} hours"


def _label(rule: str, period: Any) -> str:
    if rule == "weekly":
        return f"{period[0]}-W{period[1]:02d}"
    if rule == "monthly":
        return f"{period[0]}-{period[1]:02d}"
    return str(period)
