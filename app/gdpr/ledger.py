"""Record and list erasure requests; each is audited (`gdpr.erasure_recorded`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import clock
from app.catalog import audit
from app.catalog.models import Erasure, Source
from app.catalog.sources import get_source
from app.errors import ConfigurationError, SourceError


def erasure_json(e: Erasure, source: str) -> dict[str, Any]:
    return {
        "id": e.id,
        "source": source,
        "database": e.database,
        "subject": e.subject,
        "sql": e.sql,
        "reason": e.reason,
        "requested_by": e.requested_by,
        "requested_at": clock.iso(e.requested_at),
    }


def record_erasure(
    session: Session, source: str, database: str, subject: str, sql: str, reason: str, actor: str
) -> Erasure:
    row = get_source(session, source)
    if row.kind != "postgres":
        raise SourceError(
            f"source {source} is a {row.kind} source: erasure requests are for PostgreSQL sources",
            hint="name the PostgreSQL source whose backups hold the subject",
        )
    for name, value in (
        ("--database", database),
        ("--subject", subject),
        ("--sql", sql),
        ("--reason", reason),
    ):
        if not value.strip():
            raise ConfigurationError(f"an erasure request needs {name}")
    erasure = Erasure(
        source_id=row.id,
        database=database,
        subject=subject,
        sql=sql,
        reason=reason,
        requested_by=actor,
        requested_at=clock.now(),
    )
    session.add(erasure)
    session.flush()
    audit.append(
        session,
        "gdpr.erasure_recorded",
        f"erasure {erasure.id}",
        {"source": source, "database": database, "subject": subject, "reason": reason},
        actor,
    )
    return erasure


def erasures_of(session: Session, source: str | None) -> list[dict[str, Any]]:
    """Every erasure request (of `source`), oldest first: the order they are re-applied in."""
    query = select(Erasure, Source.name).join(Source, Source.id == Erasure.source_id).order_by(Erasure.id)
    if source is not None:
        query = query.where(Source.name == source)
    return [erasure_json(e, name) for e, name in session.execute(query)]
