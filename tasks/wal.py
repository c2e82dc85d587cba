"""WAL tasks (queue `wal`, latency-critical: its own workers, docs/CLUSTER.md). Archiving itself never
goes through the broker (`wal push` is PostgreSQL's archive_command); these watch the archive."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from app.wal.status import wal_status


@shared_task(bind=True, name="tasks.wal.archive_check")
def archive_check(self: Any, source: str | None = None) -> list[dict[str, Any]]:
    """Archived ranges, gaps and the achieved RPO of `source` (every PostgreSQL source by default),
    each flagged when the RPO exceeds MAX_DATA_LOSS_SECONDS."""
    return [status.to_json() for status in wal_status(self.ctx, source)]
