"""Incident rows: the open incident of a condition key, and those still owing a channel a message."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.catalog.models import Incident


def open_incidents(session: Session) -> dict[str, Incident]:
    """Every unresolved incident by its key."""
    return {row.key: row for row in session.scalars(select(Incident).where(Incident.resolved_at.is_(None)))}


def owing(session: Session, resolved_since: datetime) -> list[Incident]:
    """Incidents with messages still to deliver: open ones, and those resolved since `resolved_since`."""
    rows = session.scalars(
        select(Incident)
        .where(or_(Incident.resolved_at.is_(None), Incident.resolved_at >= resolved_since))
        .order_by(Incident.id)
    )
    return [row for row in rows if row.pending]


def list_incidents(session: Session, *, include_resolved: bool = False, limit: int = 100) -> list[Incident]:
    query = select(Incident).order_by(Incident.opened_at.desc(), Incident.id.desc()).limit(limit)
    if not include_resolved:
        query = query.where(Incident.resolved_at.is_(None))
    return list(session.scalars(query))
