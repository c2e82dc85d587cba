"""The job ledger: every operation moves a job through pending, running, succeeded, failed, cancelled;
a scheduled run that could not start is recorded as `skipped`, with the reason."""

from __future__ import annotations

import secrets
import socket
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from app import clock
from app.catalog.models import Job

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


# A finished unit's progress statements, built once (a unit's fixed cost): on the Core connection, as
# an ORM load and flush of the job cost twice the client CPU for the same two statements.
_PROGRESS_OF_JOB = select(Job.id, Job.progress).where(Job.id == bindparam("job")).limit(1).with_for_update()
_PROGRESS_OF_BACKUP = (
    select(Job.id, Job.progress)
    .where(Job.backup_id == bindparam("backup"), Job.kind == "backup")
    .limit(1)
    .with_for_update()
)
_PROGRESS_WRITE = (
    update(Job)
    .where(Job.id == bindparam("job"))
    .values(progress=bindparam("new_progress", type_=Job.progress.type), heartbeat_at=bindparam("beat_at"))
)


def add_backup_progress(
    session: Session, backup_id: str, *, units: int, bytes_done: int, job_id: str | None = None
) -> None:
    """Count a finished unit on the backup's job (`job_id` when the caller knows it), and beat its
    heartbeat. The job row is locked (PostgreSQL) so two units finishing at once on two workers do not
    lose an increment."""
    conn = session.connection()
    if job_id is not None:
        found = conn.execute(_PROGRESS_OF_JOB, {"job": job_id}).first()
    else:
        found = conn.execute(_PROGRESS_OF_BACKUP, {"backup": backup_id}).first()
    if found is None:
        return
    progress = dict(found.progress or {})
    progress["units_done"] = int(progress.get("units_done", 0)) + units
    progress["bytes_done"] = int(progress.get("bytes_done", 0)) + bytes_done
    conn.execute(_PROGRESS_WRITE, {"job": found.id, "new_progress": progress, "beat_at": clock.now()})


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
