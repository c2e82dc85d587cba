"""The job ledger: every operation moves a job through pending, running, succeeded, failed, cancelled;
a scheduled run that could not start is recorded as `skipped`, with the reason."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import clock
from app.catalog.models import BackupUnit, Job

JOB_STATES = ("pending", "running", "succeeded", "failed", "cancelled", "skipped")


def new_job_id() -> str:
    return "j-" + clock.now().strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(4)


def start_job(
    session: Session, kind: str, *, source_id: int | None = None, backup_id: str | None = None
) -> Job:
    now = clock.now()
    job = Job(
        id=new_job_id(),
        kind=kind,
        state="running",
        source_id=source_id,
        backup_id=backup_id,
        worker=socket.gethostname(),
        progress={},
        created_at=now,
        started_at=now,
        heartbeat_at=now,
    )
    session.add(job)
    session.flush()
    return job


def record_skipped(session: Session, kind: str, *, source_id: int | None, reason: str) -> Job:
    """A job that was due but did not start (its source was locked by a running backup): a row in the
    ledger, finished at once, state `skipped`, the reason as its error."""
    job = start_job(session, kind, source_id=source_id)
    job.state, job.error, job.finished_at = "skipped", reason, job.started_at
    return job


def finish_job(
    session: Session,
    job_id: str,
    state: str,
    *,
    error: str | None = None,
    progress: dict[str, Any] | None = None,
) -> None:
    job = session.get(Job, job_id)
    if job is None:
        return
    job.state = state
    job.error = error
    job.finished_at = clock.now()
    if progress is not None:
        job.progress = progress


def backup_job(session: Session, backup_id: str) -> Job | None:
    return session.scalar(select(Job).where(Job.backup_id == backup_id, Job.kind == "backup").limit(1))


def backup_job_cancelled(session: Session, backup_id: str) -> bool:
    job = backup_job(session, backup_id)
    return job is not None and job.state == "cancelled"


def units_done(session: Session, backup_ids: Iterable[str]) -> dict[str, tuple[int, int]]:
    """The units done so far of these backups, and their planned bytes, from `backup_units` in one
    query: a running backup's progress. A finished unit writes nothing on its job (that lock and two
    statements per unit were a unit's fixed cost); finalize writes the final count on the job."""
    ids = list(backup_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(BackupUnit.backup_id, func.count(), func.coalesce(func.sum(BackupUnit.bytes), 0))
        .where(BackupUnit.backup_id.in_(ids), BackupUnit.state == "done")
        .group_by(BackupUnit.backup_id)
    )
    return {backup_id: (int(count), int(done)) for backup_id, count, done in rows}


def beat_backup_job(session: Session, backup_id: str) -> None:
    job = backup_job(session, backup_id)
    if job is not None and job.state == "running":
        job.heartbeat_at = clock.now()


def cancel_job(session: Session, job_id: str) -> Job:
    """Mark a pending or running job cancelled; its workers stop at their next file. JobNotFoundError
    for an unknown id, JobFinishedError for a job that has already finished (left as it is)."""
    from app.errors import JobFinishedError, JobNotFoundError

    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFoundError(f"no job {job_id!r}", hint="list jobs with `equisplit-dr backup status`")
    if job.state not in ("pending", "running"):
        raise JobFinishedError(
            f"job {job_id} has already finished ({job.state}): nothing to cancel",
            hint="`equisplit-dr backup status` shows each job's state",
        )
    job.state = "cancelled"
    job.finished_at = clock.now()
    return job
