"""The effective alert thresholds (`monitoring thresholds`): the spec's alert table with the values the
settings give, one place that every health check reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from app.settings import Settings

#: Days between restore drills per DR_TEST_FREQUENCY.
DRILL_PERIOD_DAYS = {"daily": 1, "weekly": 7, "monthly": 31, "quarterly": 92}


@dataclass(frozen=True)
class Thresholds:
    backup_failures_alert: int
    backup_failures_escalate: int
    stale_warning_seconds: int
    stale_critical_seconds: int
    storage_warning_percent: float
    storage_critical_percent: float
    storage_quota_bytes: int
    replication_lag_target_seconds: int
    max_data_loss_seconds: int
    rto_target_seconds: int
    verified_restore_max_age_seconds: int
    orphan_scan_limit: int
    job_stale_seconds: int
    check_timeout_seconds: int

    @property
    def stale_warning(self) -> timedelta:
        return timedelta(seconds=self.stale_warning_seconds)

    @property
    def stale_critical(self) -> timedelta:
        return timedelta(seconds=self.stale_critical_seconds)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def thresholds(settings: Settings) -> Thresholds:
    restore_age = settings.alert_verified_restore_max_age_hours * 3600 or (
        2 * DRILL_PERIOD_DAYS[settings.dr_test_frequency] * 86400
    )
    return Thresholds(
        backup_failures_alert=1,
        backup_failures_escalate=settings.alert_backup_failures_escalate,
        stale_warning_seconds=int(settings.alert_stale_warning_hours * 3600),
        stale_critical_seconds=int(settings.alert_stale_critical_hours * 3600),
        storage_warning_percent=settings.alert_storage_warning_percent,
        storage_critical_percent=settings.alert_storage_critical_percent,
        storage_quota_bytes=settings.backup_storage_quota_bytes,
        replication_lag_target_seconds=settings.backup_replication_lag_target,
        max_data_loss_seconds=settings.max_data_loss_seconds,
        rto_target_seconds=settings.rto_target,
        verified_restore_max_age_seconds=int(restore_age),
        orphan_scan_limit=settings.alert_orphan_scan_limit,
        job_stale_seconds=settings.job_stale_seconds,
        check_timeout_seconds=settings.health_check_timeout,
    )


#: What each threshold means, for `monitoring thresholds` (name, setting, meaning).
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "backup_failures_alert": ("-", "consecutive failed backups of a source that open an alert"),
    "backup_failures_escalate": ("ALERT_BACKUP_FAILURES_ESCALATE", "... that make it critical (PagerDuty)"),
    "stale_warning_seconds": ("ALERT_STALE_WARNING_HOURS", "newest restorable backup older: warning"),
    "stale_critical_seconds": ("ALERT_STALE_CRITICAL_HOURS", "newest restorable backup older: critical"),
    "storage_warning_percent": ("ALERT_STORAGE_WARNING_PERCENT", "storage used: warning"),
    "storage_critical_percent": ("ALERT_STORAGE_CRITICAL_PERCENT", "storage used: critical"),
    "storage_quota_bytes": ("BACKUP_STORAGE_QUOTA_BYTES", "the primary storage's quota (0: the file system)"),
    "replication_lag_target_seconds": (
        "BACKUP_REPLICATION_LAG_TARGET",
        "replication lag: warning, 2x critical",
    ),
    "max_data_loss_seconds": ("MAX_DATA_LOSS_SECONDS", "age of the newest archived WAL (RPO): critical"),
    "rto_target_seconds": ("RTO_TARGET", "a drill's restore time above its target: warning"),
    "verified_restore_max_age_seconds": (
        "ALERT_VERIFIED_RESTORE_MAX_AGE_HOURS",
        "no passed restore drill of a source for longer: warning (0: 2x DR_TEST_FREQUENCY)",
    ),
    "orphan_scan_limit": ("ALERT_ORPHAN_SCAN_LIMIT", "objects listed per check when counting orphans"),
    "job_stale_seconds": ("JOB_STALE_SECONDS", "a running job without a heartbeat: warning"),
    "check_timeout_seconds": ("HEALTH_CHECK_TIMEOUT", "each health check's time bound"),
}
