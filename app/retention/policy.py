"""The retention policy: what the settings ask to keep (docs/RETENTION.md section 1)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from app.settings import Settings

_COUNTS = ("daily", "weekly", "monthly", "yearly", "minimum", "archive_years")


@dataclass(frozen=True)
class RetentionPolicy:
    #: GFS: the newest backup of each of the last N days / weeks / months / years that have one.
    daily: int = 30
    weekly: int = 12
    monthly: int = 12
    yearly: int = 7
    #: The N newest backups of a source, whatever their dates.
    minimum: int = 3
    #: Every backup started within this span before the source's newest backup.
    within: timedelta = timedelta(days=1)
    #: Archive backups are kept this many years after they were made.
    archive_years: int = 7
    #: PostgreSQL: every point of this span before the newest backup stays recoverable.
    pitr_window: timedelta = timedelta(days=30)

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            daily=settings.backup_retention_daily,
            weekly=settings.backup_retention_weekly,
            monthly=settings.backup_retention_monthly,
            yearly=settings.backup_retention_yearly,
            minimum=settings.backup_retention_minimum,
            within=timedelta(hours=settings.backup_retention_keep_within_hours),
            archive_years=settings.backup_retention_archive_years,
            pitr_window=timedelta(days=settings.backup_pitr_window_days),
        )

    @classmethod
    def for_region(cls, settings: Settings, region: str) -> RetentionPolicy:
        """The primary's policy with the region's overrides (BACKUP_REGION_RETENTION); none: the same."""
        rules = dict(settings.backup_region_retention.get(region, {}))
        changes: dict[str, Any] = {k: v for k, v in rules.items() if k in _COUNTS}
        if "keep_within_hours" in rules:
            changes["within"] = timedelta(hours=rules["keep_within_hours"])
        if "pitr_window_days" in rules:
            changes["pitr_window"] = timedelta(days=rules["pitr_window_days"])
        return replace(cls.from_settings(settings), **changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "daily": self.daily,
            "weekly": self.weekly,
            "monthly": self.monthly,
            "yearly": self.yearly,
            "minimum": self.minimum,
            "within_hours": self.within.total_seconds() / 3600,
            "archive_years": self.archive_years,
            "pitr_window_days": self.pitr_window.total_seconds() / 86400,
        }
