"""Drill rows: each restore drill with its measured RTO, the point it reached and its outcome."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import clock
from app.catalog.models import Drill


def new_drill_id() -> str:
    return "drill-" + clock.now().strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def record_drill(
    session: Session,
    *,
    drill_id: str,
    source_id: int,
    backup_id: str | None,
    kind: str,
    mode: str,
    outcome: str,
    started_at: datetime,
    rto_seconds: float | None,
    rto_target_seconds: int,
    point_reached: datetime | None,
    rpo_seconds: float | None,
    detail: dict[str, Any],
    error: str | None,
) -> None:
    session.merge(
        Drill(
            id=drill_id,
            source_id=source_id,
            backup_id=backup_id,
            kind=kind,
            mode=mode,
            outcome=outcome,
            started_at=started_at,
            finished_at=clock.now(),
            rto_seconds=rto_seconds,
            rto_target_seconds=rto_target_seconds,
            point_reached=point_reached,
            rpo_seconds=rpo_seconds,
            detail=detail,
            error=error,
        )
    )


def last_drills(session: Session, source_id: int | None = None, limit: int = 20) -> list[Drill]:
    query = select(Drill).order_by(Drill.started_at.desc()).limit(limit)
    if source_id is not None:
        query = query.where(Drill.source_id == source_id)
    return list(session.scalars(query))
