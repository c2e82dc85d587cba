"""The reaper: a job whose worker stopped beating is failed (and its backup with it), so nothing stays
`running` forever. A worker that was only slow finds its backup failed and stops at its next unit."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app import clock
from app.backup.finalize import fail_backup
from app.catalog import jobs
from app.catalog.db import transaction
from app.catalog.models import Job
from app.context import Context


def reap_stale_jobs(ctx: Context) -> list[str]:
    """Fail running jobs with no heartbeat for JOB_STALE_SECONDS; returns their ids."""
    cutoff = clock.now() - timedelta(seconds=ctx.settings.job_stale_seconds)
    with ctx.sessions() as session:
        stale = [
            (job.id, job.backup_id, job.kind, job.heartbeat_at or job.started_at)
            for job in session.scalars(select(Job).where(Job.state == "running"))
            if clock.as_utc(job.heartbeat_at or job.started_at or job.created_at) < cutoff
        ]
    for job_id, backup_id, kind, beat in stale:
        message = f"worker lost: no heartbeat since {clock.iso(beat)}"
        if kind == "backup" and backup_id:
            fail_backup(ctx, backup_id, message, actor="reaper")
        with transaction(ctx.sessions) as session:
            row = session.get(Job, job_id)
            if row is not None and row.state == "running":
                jobs.finish_job(session, job_id, "failed", error=message)
    return [job_id for job_id, *_ in stale]
