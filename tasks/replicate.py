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


def after_backup(task: Any) -> None:
    """Enqueue a pass once a backup has finalized (nothing when replication is off, or in eager mode: with
    no broker there is no queue to put it on, and `equisplit-dr replication run` does the pass). The backup
    is done whatever happens here: a broker hiccup is logged, and beat's next pass copies what this one
    would have."""
    if task.request.is_eager or not is_enabled(task.ctx.settings):
        return
    try:
        replicate.delay()
    except Exception as exc:
        log.warning("replication after the backup was not enqueued: %s", describe(exc))
