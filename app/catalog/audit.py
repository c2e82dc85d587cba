"""The append-only, hash-chained audit trail: each entry's hash covers the previous entry's hash."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import socket
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app import clock
from app.catalog.models import AuditEntry

GENESIS = "0" * 64


def default_actor() -> str:
    """`DR_ACTOR` when set (a named operator or service account), else `user@host` of this process."""
    named = os.environ.get("DR_ACTOR", "").strip()
    if named:
        return named[:255]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def entry_digest(prev_hash: str, entry: AuditEntry) -> str:
    """The entry's hash: SHA-256 of the previous hash and the entry's canonical body (docs/FORMAT.md 10)."""
    body = json.dumps(
        [clock.iso(entry.at), entry.actor, entry.action, entry.object, entry.detail],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def entry_json(entry: AuditEntry, *, chained: bool = False) -> dict[str, Any]:
    """An entry as JSON; `chained` adds its previous hash and its own (as anchors store them)."""
    doc: dict[str, Any] = {
        "id": entry.id,
        "at": clock.iso(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "object": entry.object,
        "detail": entry.detail,
    }
    if chained:
        doc["prev_hash"], doc["hash"] = entry.prev_hash, entry.hash
    return doc


def append(
    session: Session, action: str, obj: str | None, detail: dict[str, Any], actor: str | None = None
) -> AuditEntry:
    """Add one entry, chained to the last; concurrent writers are serialised."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(4242001)"))
    last = session.scalar(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1))
    prev = last or GENESIS
    entry = AuditEntry(
        at=clock.now(),
        actor=actor or default_actor(),
        action=action,
        object=obj,
        detail=detail,
        prev_hash=prev,
    )
    entry.hash = entry_digest(prev, entry)
    session.add(entry)
    session.flush()
    return entry


def append_many(
    session: Session, entries: list[tuple[str, str | None, dict[str, Any]]], actor: str | None = None
) -> None:
    """Add one entry per `(action, object, detail)`, chained in order, with one read of the last hash
    and one flush (a batch of deletions audits each deletion without a round trip per entry)."""
    if not entries:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(4242001)"))
    prev = session.scalar(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)) or GENESIS
    who = actor or default_actor()
    for action, obj, detail in entries:
        entry = AuditEntry(
            at=clock.now(), actor=who, action=action, object=obj, detail=detail, prev_hash=prev
        )
        entry.hash = prev = entry_digest(prev, entry)
        session.add(entry)
    session.flush()


def verify_chain(session: Session) -> list[int]:
    """Ids of entries whose hash or link does not match: empty when the trail is intact."""
    bad: list[int] = []
    prev = GENESIS
    for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.id)):
        if entry.prev_hash != prev or entry_digest(prev, entry) != entry.hash:
            bad.append(entry.id)
        prev = entry.hash
    return bad
