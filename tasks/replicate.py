"""Replication tasks (queue `replicate`, docs/REPLICATION.md): beat's pass over every secondary region
and the pass enqueued right after each backup. A region that could not be brought up to date raises
ReplicationError, which the base task retries with backoff; the result is each region's pass."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

from app.errors import ReplicationError
from app.replication.regions import is_enabled
from app.replication.run import describe
from app.replication.run import replicate as replicate_regions

log = logging.getLogger(__name__)


@shared_task(bind=True, name="tasks.replicate.replicate")
def replicate(self: Any, region: str | None = None) -> list[dict[str, Any]]:
    passes = replicate_regions(self.ctx, region, actor="celery")
    failed = [p for p in passes if p.error]
    if failed:
        raise ReplicationError(
            "replication failed for region(s) " + ", ".join(f"{p.region} ({p.error})" for p in failed),
            hint="`equisplit-dr replication status` shows the lag; the task is retried and beat runs the next pass",
        )
    return [p.to_json() for p in passes]


def after_backup(ctx: Any) -> None:
    """Enqueue a pass once a backup has finalized (nothing when replication is off). The backup is done
    whatever happens here: a broker hiccup (or, in eager mode, the pass's own error) is logged, and beat's
    next pass copies what this one would have."""
    if not is_enabled(ctx.settings):
        return
    try:
        replicate.delay()
    except Exception as exc:
        log.warning("replication after the backup was not enqueued or failed: %s", describe(exc))
