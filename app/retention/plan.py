"""The retention plan: every backup with the reasons that keep it (none: it goes), and the WAL that
no retained backup and no point of the PITR window needs (docs/RETENTION.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import clock
from app.catalog.backups import USABLE_STATES
from app.catalog.holds import hold_reasons
from app.catalog.models import Backup, Source, WalSegment
from app.context import Context
from app.retention.keep import Candidate, keep_reasons
from app.retention.policy import RetentionPolicy

#: WAL files that thinning may delete (history and backup-label files are tiny and always kept).
THINNABLE = ("segment", "partial")


@dataclass
class PlannedBackup:
    id: str
    source: str
    type: str
    state: str
    started_at: datetime
    reasons: list[str]

    @property
    def keep(self) -> bool:
        return bool(self.reasons)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "state": self.state,
            "started_at": clock.iso(self.started_at),
            "keep": self.keep,
            "reasons": self.reasons,
        }


@dataclass
class WalThinning:
    """One PostgreSQL source's WAL that no retained backup and no point of the window needs."""

    source: str
    source_id: int
    names: list[str] = field(default_factory=list)
    bytes: int = 0
    kept_from: datetime | None = None  # every file archived from here on is kept (the window's base)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "delete": len(self.names),
            "bytes": self.bytes,
            "first": self.names[0] if self.names else None,
            "last": self.names[-1] if self.names else None,
            "all_kept_from": clock.iso(self.kept_from),
        }


@dataclass
class RetentionPlan:
    policy: RetentionPolicy
    now: datetime
    backups: list[PlannedBackup]
    wal: list[WalThinning]

    @property
    def deletions(self) -> list[PlannedBackup]:
        return [b for b in self.backups if not b.keep]

    def to_json(self) -> dict[str, Any]:
        return {
            "now": clock.iso(self.now),
            "policy": self.policy.to_json(),
            "keep": sum(1 for b in self.backups if b.keep),
            "delete": len(self.deletions),
            "backups": [b.to_json() for b in self.backups],
            "wal": [w.to_json() for w in self.wal],
        }


def plan_retention(ctx: Context, *, source: str | None = None, now: datetime | None = None) -> RetentionPlan:
    now = now or clock.now()
    policy = RetentionPolicy.from_settings(ctx.settings)
    with ctx.sessions() as session:
        held_backups, held_sources = hold_reasons(session)
        query = select(Backup, Source).join(Source, Backup.source_id == Source.id)
        query = query.where(Backup.state.in_(USABLE_STATES))
        if source is not None:
            query = query.where(Source.name == source)
        rows = [(b, s) for b, s in session.execute(query.order_by(Backup.started_at, Backup.id))]
        candidates = [
            Candidate(
                id=b.id,
                source=s.name,
                type=b.type,
                started_at=clock.as_utc(b.started_at),
                postgres_stopped_at=clock.as_utc(b.pg_stopped_at) if b.pg_stopped_at else None,
                damaged=b.damaged_at is not None,
                partial=b.state == "partial",
                hold=held_backups.get(b.id) or held_sources.get(s.id),
            )
            for b, s in rows
        ]
        reasons = keep_reasons(candidates, policy, now)
        backups = [
            PlannedBackup(b.id, s.name, b.type, b.state, clock.as_utc(b.started_at), reasons[b.id])
            for b, s in rows
        ]
        kept = {b.id for b in backups if b.keep}
        wal = [_thin(session, s, [b for b, src in rows if src.id == s.id and b.id in kept], policy, now)
               for s in {src.id: src for _, src in rows if src.kind == "postgres"}.values()]  # fmt: skip
    return RetentionPlan(policy, now, backups, [w for w in wal if w is not None])


def _thin(
    session: Session, source: Source, kept: list[Backup], policy: RetentionPolicy, now: datetime
) -> WalThinning | None:
    """WAL archived before the window's base backup started, outside every older kept backup's own range."""
    bases = sorted(
        (b for b in kept if b.pg_start_wal and b.pg_stopped_at is not None),
        key=lambda b: clock.as_utc(b.pg_stopped_at or b.started_at),
    )
    if not bases:
        return None  # no base backup to recover from: every WAL file is kept
    present = [clock.as_utc(b.started_at) for b in bases if clock.as_utc(b.started_at) <= now]
    window_start = (max(present) if present else now) - policy.pitr_window
    before = [b for b in bases if b.pg_stopped_at and clock.as_utc(b.pg_stopped_at) < window_start]
    window_base = before[-1] if before else bases[0]
    kept_from = clock.as_utc(window_base.pg_started_at or window_base.started_at)
    ranges = [(b.pg_timeline, b.pg_start_wal or "", b.pg_stop_wal or "") for b in bases]
    thinning = WalThinning(source.name, source.id, kept_from=kept_from)
    for row in session.scalars(
        select(WalSegment)
        .where(
            WalSegment.source_id == source.id,
            WalSegment.kind.in_(THINNABLE),
            WalSegment.archived_at < kept_from,
        )
        .order_by(WalSegment.timeline, WalSegment.name)
    ):
        segment = row.name[:24]
        if any(t == row.timeline and start <= segment <= stop for t, start, stop in ranges):
            continue  # it makes a kept base backup consistent
        thinning.names.append(row.name)
        thinning.bytes += row.stored_size
    return thinning
