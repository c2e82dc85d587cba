"""A background thread that keeps a running backup's lease and job alive while work goes on."""

from __future__ import annotations

import threading
from datetime import timedelta
from types import TracebackType

from app.catalog import jobs, locks
from app.catalog.db import transaction
from app.context import Context


class Heartbeat(threading.Thread):
    """Every `ttl / 4`: renew the source lease and beat the backup's job. Use as a context manager."""

    def __init__(self, ctx: Context, backup_id: str, lease: str, holder: str, ttl: timedelta) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{backup_id}")
        self.ctx, self.backup_id, self.lease, self.holder, self.ttl = ctx, backup_id, lease, holder, ttl
        self.stopped = threading.Event()
        self.interval = min(30.0, ttl.total_seconds() / 4)

    def beat(self) -> None:
        locks.renew(self.ctx.sessions, self.lease, self.holder, self.ttl)
        with transaction(self.ctx.sessions) as session:
            jobs.beat_backup_job(session, self.backup_id)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.beat()
            except Exception:  # a missed beat is retried; the lease outlives several intervals
                continue

    def __enter__(self) -> Heartbeat:
        self.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stopped.set()
