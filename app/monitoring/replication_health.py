"""The replication-lag condition: each secondary region's lag (app/replication/status.py) against its
target, BACKUP_REPLICATION_LAG_TARGET (warning past the target, critical past twice). Without
replication (off, or no secondary region) there is nothing to report."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.context import Context
from app.monitoring.health import CheckResult, HealthIssue
from app.monitoring.thresholds import Thresholds
from app.replication.status import replication_status


def region_lags(ctx: Context) -> list[dict[str, Any]]:
    """Each region's status as JSON ({region, lag_seconds, lag_target_seconds, last_error, bytes, ...});
    empty when replication is off."""
    return [region.to_json() for region in replication_status(ctx)]


def check_replication(ctx: Context, limits: Thresholds, now: datetime) -> CheckResult:
    regions = region_lags(ctx)
    result = CheckResult(figures={"regions": {r["region"]: r["lag_seconds"] for r in regions}})
    for region in regions:
        lag, target = int(region["lag_seconds"]), int(region["lag_target_seconds"])
        if lag <= target:
            continue
        why = f"; last error: {region['last_error']}" if region.get("last_error") else ""
        result.issues.append(
            HealthIssue(
                "critical" if lag > 2 * target else "warning",
                None,
                f"replication to region {region['region']} lags {lag} s (target {target} s){why}",
                condition="replication_lag",
                subject=region["region"],
            )
        )
    return result
