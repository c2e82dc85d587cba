"""Replication status per region (docs/REPLICATION.md section 4): objects and bytes per state, and the
lag, the age of the oldest object not yet copied, against BACKUP_REPLICATION_LAG_TARGET."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app import clock
from app.catalog import replicas
from app.context import Context
from app.replication.regions import configured_regions, is_enabled


@dataclass
class RegionStatus:
    region: str
    location: str
    objects: dict[str, int]
    bytes: dict[str, int]
    lag_seconds: int
    lag_target_seconds: int
    oldest_waiting: datetime | None
    last_pass_at: datetime | None
    last_error: str | None
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: Objects pending for a reason (the first 10): an archive's packs thawing in the primary.
    waiting: list[dict[str, Any]] = field(default_factory=list)

    @property
    def lag_exceeded(self) -> bool:
        return self.lag_seconds > self.lag_target_seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "location": self.location,
            "objects": self.objects,
            "bytes": self.bytes,
            "lag_seconds": self.lag_seconds,
            "lag_target_seconds": self.lag_target_seconds,
            "lag_exceeded": self.lag_exceeded,
            "oldest_waiting": clock.iso(self.oldest_waiting),
            "last_pass_at": clock.iso(self.last_pass_at),
            "last_error": self.last_error,
            "errors": self.errors,
            "waiting": self.waiting,
        }


def replication_status(ctx: Context, region: str | None = None) -> list[RegionStatus]:
    """Every secondary region's status (none when replication is off and no region is named)."""
    if region is None and not is_enabled(ctx.settings):
        return []
    now = clock.now()
    target = ctx.settings.backup_replication_lag_target
    statuses = []
    with ctx.sessions() as session:
        for chosen in configured_regions(ctx.settings, region):
            summary = replicas.summary(session, chosen.name)
            oldest = summary.oldest_waiting
            lag = max(0, int((now - oldest).total_seconds())) if oldest is not None else 0
            statuses.append(
                RegionStatus(
                    region=chosen.name,
                    location=chosen.location,
                    objects=summary.objects,
                    bytes=summary.bytes,
                    lag_seconds=lag,
                    lag_target_seconds=target,
                    oldest_waiting=oldest,
                    last_pass_at=summary.last_pass_at,
                    last_error=summary.last_error,
                    errors=summary.errors,
                    waiting=summary.waiting,
                )
            )
    return statuses
