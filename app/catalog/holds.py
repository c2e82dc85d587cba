"""Legal holds: on one backup or on a whole source; while active, nothing they cover is deleted."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import clock
from app.catalog.models import Backup, LegalHold
from app.errors import ConfigurationError


def add_hold(
    session: Session, *, reason: str, actor: str, backup_id: str | None = None, source_id: int | None = None
) -> LegalHold:
    if (backup_id is None) == (source_id is None):
        raise ConfigurationError("a hold is on one backup or on one source", hint="give BACKUP_ID or --source")
    if not reason.strip():
        raise ConfigurationError("a hold needs a reason", hint="add --reason 'matter 2026-114, counsel J. Doe'")
    hold = LegalHold(
        backup_id=backup_id, source_id=source_id, reason=reason.strip(), created_at=clock.now(), created_by=actor
    )
    session.add(hold)
    session.flush()
    return hold


def release_hold(session: Session, hold_id: int, *, actor: str, reason: str) -> LegalHold:
    hold = session.get(LegalHold, hold_id)
    if hold is None or hold.released_at is not None:
        raise ConfigurationError(
            f"no active hold {hold_id}", hint="list holds with `equisplit-dr hold list`"
        )
    hold.released_at, hold.released_by, hold.release_reason = clock.now(), actor, reason
    return hold


def active_holds(session: Session) -> list[LegalHold]:
    return list(session.scalars(select(LegalHold).where(LegalHold.released_at.is_(None)).order_by(LegalHold.id)))


def all_holds(session: Session) -> list[LegalHold]:
    return list(session.scalars(select(LegalHold).order_by(LegalHold.id)))


def hold_reasons(session: Session) -> tuple[dict[str, str], dict[int, str]]:
    """(backup id -> reason, source id -> reason) of the active holds."""
    by_backup: dict[str, str] = {}
    by_source: dict[int, str] = {}
    for hold in active_holds(session):
        label = f"#{hold.id} {hold.reason} (by {hold.created_by})"
        if hold.backup_id is not None:
            by_backup[hold.backup_id] = label
        elif hold.source_id is not None:
            by_source[hold.source_id] = label
    return by_backup, by_source


def is_held(session: Session, backup: Backup) -> bool:
    by_backup, by_source = hold_reasons(session)
    return backup.id in by_backup or backup.source_id in by_source
