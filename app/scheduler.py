"""`BackupScheduler`: the spec's scheduler API — the effective schedule, the health status, and the
job ledger (status, logs, cancel). Celery beat runs the schedule; this reads and explains it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from app import clock
from app.audit.access import record_access
from app.catalog import jobs
from app.catalog.audit import entry_json
from app.catalog.db import transaction
from app.catalog.models import AuditEntry, Job, Source
from app.context import Context
from app.monitoring.health import HealthStatus, get_health_status
from app.monitoring.reaper import reap_stale_jobs
from app.scheduling import upcoming
from app.settings import Settings, load_settings


class BackupScheduler:
    def __init__(self, settings: Settings | None = None, *, context: Context | None = None) -> None:
        self.context = context or Context(settings or load_settings())
        self.settings = self.context.settings

    def close(self) -> None:
        self.context.close()

    def __enter__(self) -> BackupScheduler:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def schedule(self, count: int = 3) -> list[dict[str, Any]]:
        return upcoming(self.settings, clock.now(), count)

    def get_health_status(self) -> HealthStatus:
        return get_health_status(self.context)

    def reap(self) -> list[str]:
        return reap_stale_jobs(self.context)

    def job_status(self, since: datetime, kind: str | None = None) -> list[dict[str, Any]]:
        with self.context.sessions() as session:
            query = (
                select(Job, Source.name)
                .outerjoin(Source, Job.source_id == Source.id)
                .where(Job.created_at >= since)
                .order_by(Job.created_at)
            )
            if kind:
                query = query.where(Job.kind == kind)
            found = session.execute(query).all()
            running = [j.backup_id for j, _ in found if j.kind == "backup" and j.state == "running" and j.backup_id]
            done = jobs.units_done(session, running)
            rows = []
            for job, source in found:
                end = job.finished_at or clock.now()
                rows.append(
                    {
                        "job_id": job.id,
                        "kind": job.kind,
                        "state": job.state,
                        "source": source,
                        "backup_id": job.backup_id,
                        "worker": job.worker,
                        "task_id": job.task_id,
                        "created_at": clock.iso(job.created_at),
                        "finished_at": clock.iso(job.finished_at),
                        "seconds": round(
                            (
                                clock.as_utc(end) - clock.as_utc(job.started_at or job.created_at)
                            ).total_seconds(),
                            1,
                        ),
                        "progress": _with_units_done(job.progress, done.get(job.backup_id or "")),
                        "error": job.error,
                    }
                )
            return rows

    def job_logs(self, since: datetime, *, audited: bool = True) -> list[dict[str, Any]]:
        """The audit trail since `since`: who did what, with each failure's error. Audited as
        `data.accessed` unless `audited` is False (the caller records it once the trail verified)."""
        with self.context.sessions() as session:
            entries = session.scalars(
                select(AuditEntry).where(AuditEntry.at >= since).order_by(AuditEntry.id)
            )
            rows = [entry_json(e) for e in entries]
        if audited:
            self.record_logs_access(since, len(rows))
        return rows

    def record_logs_access(self, since: datetime, entries: int) -> None:
        record_access(self.context, "audit_log", "audit trail", since=clock.iso(since), entries=entries)

    def cancel_job(self, job_id: str, actor: str | None = None) -> dict[str, Any]:
        from app.backup.finalize import fail_backup
        from app.catalog import audit
        from app.errors import JobCancelledError

        with transaction(self.context.sessions) as session:
            job = jobs.cancel_job(session, job_id)
            audit.append(
                session, "job.cancelled", job_id, {"state": job.state, "backup": job.backup_id}, actor
            )
            result = {"job_id": job.id, "state": job.state, "backup_id": job.backup_id}
        if job.kind == "backup" and job.backup_id and job.state == "cancelled":
            # Units still running stop at their next file; the source is free for the next backup now.
            fail_backup(
                self.context, job.backup_id, JobCancelledError(f"job {job_id} was cancelled"), actor=actor
            )
        return result


def _with_units_done(progress: dict[str, Any] | None, done: tuple[int, int] | None) -> dict[str, Any] | None:
    """A running backup's progress with the units done so far (counted from its units' rows)."""
    if done is None or progress is None:
        return progress
    return {**progress, "units_done": done[0], "bytes_done": done[1]}
