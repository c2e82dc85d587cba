"""Blockers: the jobs that may still name a candidate's chunks, recorded when its chunks leave the index
(docs/GC.md section 2): the backups running then (they may reuse what they looked up) and the readers
registered then (a restore, verification or drill may have located its chunks in the pack). The sweep
waits until none of them is running."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.catalog import readers
from app.catalog.models import Backup


def running(session: Session) -> set[str]:
    """The ids of the running backups and the names of the registered readers (a reader's name starts
    with `reader:`, so the two never collide)."""
    backups = set(session.scalars(select(Backup.id).where(Backup.state == "running")))
    return backups | readers.running(session)


def record(jobs: set[str]) -> dict[str, list[str]]:
    """What a candidate row keeps of `running()`."""
    return {
        "backups": sorted(j for j in jobs if not j.startswith(readers.PREFIX)),
        "readers": sorted(j for j in jobs if j.startswith(readers.PREFIX)),
    }


def still_running(recorded: dict[str, Any], jobs: set[str]) -> set[str]:
    """The blockers of a candidate (its recorded row) that are among `jobs` (a `running()` read)."""
    return (set(recorded.get("backups", [])) | set(recorded.get("readers", []))) & jobs
