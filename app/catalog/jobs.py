"""The job ledger: every operation moves a job through pending, running, succeeded, failed, cancelled."""

from __future__ import annotations

import secrets
import socket
from typing import Any

from sqlalchemy.orm import Session

from app import clock
from app.catalog.models import Job

JOB_STATES = ("pending", "running", "succeeded", "failed", "cancelled")


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
