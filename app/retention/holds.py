"""Placing, releasing and listing legal holds, each audited (the rows: app/catalog/holds.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app import clock
from app.catalog import audit, holds
from app.catalog.backups import get_backup
from app.catalog.db import transaction
from app.catalog.models import LegalHold, Source
from app.catalog.sources import get_source
from app.context import Context


def place_hold(
    ctx: Context, reason: str, *, backup_id: str | None, source: str | None, actor: str | None
) -> dict[str, Any]:
    who = actor or audit.default_actor()
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        source_id = get_source(session, source).id if source else None
        if backup_id is not None:
            get_backup(session, backup_id)  # BackupNotFoundError names an unknown id
        hold = holds.add_hold(session, reason=reason, actor=who, backup_id=backup_id, source_id=source_id)
        target = backup_id or f"source {source}"
        audit.append(session, "hold.added", target, {"hold": hold.id, "reason": hold.reason}, who)
        return hold_json(hold, source)


def release(ctx: Context, hold_id: int, reason: str, *, actor: str | None) -> dict[str, Any]:
    who = actor or audit.default_actor()
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        hold = holds.release_hold(session, hold_id, actor=who, reason=reason)
        name = session.get(Source, hold.source_id).name if hold.source_id else None  # type: ignore[union-attr]
        target = hold.backup_id or f"source {name}"
        audit.append(session, "hold.released", target, {"hold": hold.id, "reason": reason}, who)
        return hold_json(hold, name)


def list_holds(ctx: Context, *, include_released: bool = False) -> list[dict[str, Any]]:
    with ctx.sessions() as session:
        names = {s.id: s.name for s in session.scalars(select(Source))}
        rows = holds.all_holds(session) if include_released else holds.active_holds(session)
        return [hold_json(h, names.get(h.source_id) if h.source_id else None) for h in rows]


def hold_json(hold: LegalHold, source: str | None) -> dict[str, Any]:
    return {
        "id": hold.id,
        "backup": hold.backup_id,
        "source": source,
        "reason": hold.reason,
        "created_at": clock.iso(hold.created_at),
        "created_by": hold.created_by,
        "released_at": clock.iso(hold.released_at),
        "released_by": hold.released_by,
        "release_reason": hold.release_reason,
    }
