"""Per-region retention (docs/RETENTION.md section 5): each secondary region's policy (the primary's, with
BACKUP_REGION_RETENTION's overrides) applied to the backups that region holds or is to hold. Pure apart
from reading the catalog: which backups each region keeps and why, and which it drops."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from app import clock
from app.catalog import backup_regions, replicas
from app.catalog.models import Backup, Source
from app.retention.keep import Candidate, keep_reasons
from app.retention.policy import RetentionPolicy
from app.retention.region_wal import RegionWal, plan_region_wal
from app.retention.verdicts import BackupVerdict
from app.settings import Settings


@dataclass
class RegionBackup(BackupVerdict):
    """`state` is its state in the region (complete | partial)."""

    #: Whether the region holds its manifest now (else replication is still to copy it).
    copied: bool = False
    #: Whether the primary deleted it (the region keeps it alone).
    primary_deleted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "copied": self.copied, "only_here": self.primary_deleted}


@dataclass
class RegionPlan:
    region: str
    policy: RetentionPolicy
    #: The rules BACKUP_REGION_RETENTION sets for this region (empty: the primary's policy).
    overrides: dict[str, int]
    backups: list[RegionBackup] = field(default_factory=list)
    #: The WAL the region's kept base backups and window do not need there.
    wal: list[RegionWal] = field(default_factory=list)

    @property
    def deletions(self) -> list[RegionBackup]:
        return [b for b in self.backups if not b.keep]

    def to_json(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "policy": self.policy.to_json(),
            "overrides": self.overrides,
            "keep": sum(1 for b in self.backups if b.keep),
            "delete": len(self.deletions),
            "backups": [b.to_json() for b in self.backups],
            "wal": [w.to_json() for w in self.wal],
        }


def plan_region(
    session: Session,
    settings: Settings,
    region: str,
    holds: tuple[dict[str, str], dict[int, str]],
    now: datetime,
    source: str | None = None,
) -> RegionPlan:
    """The region's policy over the backups it holds or is to hold; a legal hold keeps a backup in
    every region, and a backup dated after now is kept as in the primary."""
    held_backups, held_sources = holds
    policy = RetentionPolicy.for_region(settings, region)
    plan = RegionPlan(region, policy, dict(settings.backup_region_retention.get(region, {})))
    rows = backup_regions.in_region(session, region, source)
    copied = replicas.states(session, region, "manifests", [b.id for b, _, _ in rows])
    candidates = [
        candidate_of(b, s, state, held_backups.get(b.id) or held_sources.get(s.id)) for b, s, state in rows
    ]
    reasons = keep_reasons(candidates, policy, now)
    plan.backups = [
        RegionBackup(
            b.id,
            s.name,
            b.type,
            state,
            clock.as_utc(b.started_at),
            reasons[b.id],
            copied.get(b.id) == replicas.COPIED,
            b.state == "deleted",
        )
        for b, s, state in rows
    ]
    plan.wal = plan_region_wal(session, region, [(b, s) for b, s, _ in rows if reasons[b.id]], policy, now)
    return plan


def candidate_of(b: Backup, s: Source, state: str, hold: str | None) -> Candidate:
    """What the keep rules need of a catalog row; `state` is its state where the rules apply."""
    return Candidate(
        id=b.id,
        source=s.name,
        type=b.type,
        started_at=clock.as_utc(b.started_at),
        postgres_stopped_at=clock.as_utc(b.pg_stopped_at) if b.pg_stopped_at else None,
        damaged=b.damaged_at is not None,
        partial=state == "partial",
        hold=hold,
    )


def keeping_regions(regions: Sequence[RegionPlan]) -> dict[str, tuple[list[str], list[str]]]:
    """Per backup some region's policy keeps: the regions holding its copy now, and those still waiting
    for it (the primary must not delete it before they have it)."""
    found: dict[str, tuple[list[str], list[str]]] = {}
    for plan in regions:
        for b in plan.backups:
            if b.keep:
                holding, waiting = found.setdefault(b.id, ([], []))
                (holding if b.copied else waiting).append(plan.region)
    return found
