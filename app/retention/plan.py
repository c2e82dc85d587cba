"""The retention plan: every backup with the reasons that keep it (none: it goes), and the WAL that
no retained backup and no point of the PITR window needs (docs/RETENTION.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import clock
from app.catalog import backup_regions
from app.catalog.backups import USABLE_STATES
from app.catalog.holds import hold_reasons
from app.catalog.models import Backup, Source, WalSegment
from app.context import Context
from app.replication.regions import configured_regions, is_enabled
from app.retention.keep import keep_reasons
from app.retention.policy import RetentionPolicy
from app.retention.regions import RegionBackup, RegionPlan, candidate_of, keeping_regions, plan_region
from app.retention.verdicts import BackupVerdict, WalVerdict
from app.retention.wal_window import wal_bounds
from app.settings import region_url

#: WAL files that thinning may delete (history and backup-label files are tiny and always kept).
THINNABLE = ("segment", "partial")


@dataclass
class PlannedBackup(BackupVerdict):
    #: Regions whose policy keeps it and that hold its copy: when the primary deletes it, it stays there.
    kept_in: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "kept_in_regions": self.kept_in}


@dataclass
class WalThinning(WalVerdict):
    """The primary's WAL to thin for one source (its id names the catalog rows)."""

    source_id: int = 0


@dataclass
class RetentionPlan:
    policy: RetentionPolicy
    now: datetime
    backups: list[PlannedBackup]
    wal: list[WalThinning]
    #: Each secondary region's plan (replication on): docs/RETENTION.md section 5.
    regions: list[RegionPlan] = field(default_factory=list)

    @property
    def deletions(self) -> list[PlannedBackup]:
        return [b for b in self.backups if not b.keep]

    def region_deletions(self, region: RegionPlan) -> list[RegionBackup]:
        """What the region's policy drops there and the primary's deletion does not already remove
        everywhere: backups the primary keeps, and backups only the region still held."""
        leaving = {b.id for b in self.deletions if region.region not in b.kept_in}
        return [b for b in region.deletions if b.id not in leaving]

    def to_json(self) -> dict[str, Any]:
        return {
            "now": clock.iso(self.now),
            "policy": self.policy.to_json(),
            "keep": sum(1 for b in self.backups if b.keep),
            "delete": len(self.deletions),
            "backups": [b.to_json() for b in self.backups],
            "wal": [w.to_json() for w in self.wal],
            "regions": [{**r.to_json(), "delete": len(self.region_deletions(r))} for r in self.regions],
        }


def plan_retention(
    ctx: Context, *, source: str | None = None, now: datetime | None = None, region: str | None = None
) -> RetentionPlan:
    """The primary's plan and each secondary region's (only `region`'s, when named; every region's is
    still computed, since the primary keeps a backup until each region keeping it has its copy)."""
    now = now or clock.now()
    policy = RetentionPolicy.from_settings(ctx.settings)
    if region is not None:
        region_url(ctx.settings, region)  # an unknown region stops here, naming the configured ones
    with ctx.sessions() as session:
        holds = hold_reasons(session)
        held_backups, held_sources = holds
        query = select(Backup, Source).join(Source, Backup.source_id == Source.id)
        query = query.where(Backup.state.in_(USABLE_STATES))
        if source is not None:
            query = query.where(Source.name == source)
        rows = [(b, s) for b, s in session.execute(query.order_by(Backup.started_at, Backup.id))]
        candidates = [
            candidate_of(b, s, b.state, held_backups.get(b.id) or held_sources.get(s.id)) for b, s in rows
        ]
        reasons = keep_reasons(candidates, policy, now)
        wanted = configured_regions(ctx.settings) if is_enabled(ctx.settings) or region else []
        regions = [plan_region(session, ctx.settings, r.name, holds, now, source) for r in wanted]
        kept_by = keeping_regions(regions)
        backups = []
        for b, s in rows:
            planned = PlannedBackup(b.id, s.name, b.type, b.state, clock.as_utc(b.started_at), reasons[b.id])
            holding, waiting = kept_by.get(b.id, ([], []))
            if not planned.reasons:
                planned.kept_in = holding
                planned.reasons.extend(
                    f"region {r} keeps it by its policy and has no copy yet" for r in waiting
                )
            backups.append(planned)
        kept = {b.id for b in backups if b.keep}
        # Base backups only a region keeps: the primary keeps the few WAL files that make them
        # consistent, since recovery plans from the catalog's WAL rows (the objects stay in the region).
        regional = set(backup_regions.kept_only_in_regions(session)) | {b.id for b in backups if b.kept_in}
        extra = (
            list(session.scalars(select(Backup).where(Backup.id.in_(sorted(regional))))) if regional else []
        )
        wal = [
            _thin(
                session,
                s,
                [b for b, src in rows if src.id == s.id and b.id in kept],
                policy,
                now,
                [b for b in extra if b.source_id == s.id],
            )
            for s in {src.id: src for _, src in rows if src.kind == "postgres"}.values()
        ]
    if region is not None:
        regions = [r for r in regions if r.region == region]
    return RetentionPlan(policy, now, backups, [w for w in wal if w is not None], regions)


def _thin(
    session: Session,
    source: Source,
    kept: list[Backup],
    policy: RetentionPolicy,
    now: datetime,
    regional: Sequence[Backup] = (),
) -> WalThinning | None:
    """WAL archived before the window's base backup started, outside every older kept backup's own range
    (and outside the range of each base backup only a region keeps, `regional`)."""
    bounds = wal_bounds(kept, policy, now, regional)
    if bounds is None:
        return None  # no base backup to recover from: every WAL file is kept
    kept_from, ranges = bounds
    thinning = WalThinning(source.name, kept_from=kept_from, source_id=source.id)
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
