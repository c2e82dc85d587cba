"""Anchors: the audit trail's head sealed in storage with the repository's data key (docs/FORMAT.md
section 10). Each anchor holds the entries since the previous one, so the anchors together hold the
trail up to the newest; a catalog whose trail ends before it was truncated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import clock
from app.catalog.audit import GENESIS, entry_digest, entry_json
from app.catalog.models import AuditEntry
from app.errors import AuditTrailError
from app.repo.format import Kind, ObjectType
from app.repo.repository import Repository

ANCHOR_VERSION = 1
PREFIX = "anchor-"
#: Entries per anchor at most: a long trail is sealed in several anchors, each bounded.
MAX_ENTRIES = 10_000


def anchor_name(last_id: int) -> str:
    return f"{PREFIX}{last_id:020d}"


@dataclass(frozen=True)
class AnchorHead:
    """What an anchor seals: the last entry's id and hash, how many entries up to it, and when."""

    name: str
    last_id: int
    last_hash: str
    count: int
    at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "last_id": self.last_id,
            "last_hash": self.last_hash,
            "count": self.count,
            "at": self.at,
        }


def anchor_names(repo: Repository) -> list[str]:
    """Every anchor in storage, oldest first (names sort as their last ids)."""
    return sorted(i.name for i in repo.storage.list(Kind.AUDIT, PREFIX) if i.name.startswith(PREFIX))


def read_anchor(repo: Repository, name: str) -> dict[str, Any]:
    """One anchor, opened and checked (its tag binds the name; its payload must say the same id)."""
    doc = repo.read_json(Kind.AUDIT, name, ObjectType.AUDIT_ANCHOR)
    if doc.get("version") != ANCHOR_VERSION or anchor_name(int(doc["last_id"])) != name:
        raise AuditTrailError(f"audit anchor {name} is not a version {ANCHOR_VERSION} anchor of its own name")
    return doc


def head_of(name: str, doc: dict[str, Any]) -> AnchorHead:
    return AnchorHead(name, int(doc["last_id"]), str(doc["last_hash"]), int(doc["count"]), str(doc["at"]))


def newest_anchor(repo: Repository) -> AnchorHead | None:
    names = anchor_names(repo)
    return head_of(names[-1], read_anchor(repo, names[-1])) if names else None


def write_anchors(session: Session, repo: Repository) -> list[AnchorHead]:
    """Seal every entry appended since the newest anchor (in anchors of at most MAX_ENTRIES entries).
    Refuses, writing nothing more, when the new entries do not chain on to the newest anchor."""
    written: list[AnchorHead] = []
    newest = newest_anchor(repo)
    while True:
        after = newest.last_id if newest else 0
        prev_hash = newest.last_hash if newest else GENESIS
        rows = list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.id > after).order_by(AuditEntry.id).limit(MAX_ENTRIES)
            )
        )
        if not rows:
            return written
        for entry in rows:
            if entry.prev_hash != prev_hash or entry_digest(prev_hash, entry) != entry.hash:
                since = newest.name if newest else "the start"
                raise AuditTrailError(
                    f"audit entry {entry.id} does not chain on from {since}: no anchor written",
                    hint="run `equisplit-dr audit verify` to see what was changed",
                )
            prev_hash = entry.hash
        last = rows[-1]
        name = anchor_name(last.id)
        doc = {
            "version": ANCHOR_VERSION,
            "repository_id": repo.id,
            "at": clock.iso(clock.now()),
            "previous": newest.name if newest else None,
            "first_id": rows[0].id,
            "last_id": last.id,
            "last_hash": last.hash,
            "count": (newest.count if newest else 0) + len(rows),
            "entries": [entry_json(e, chained=True) for e in rows],
        }
        repo.write_json(Kind.AUDIT, name, ObjectType.AUDIT_ANCHOR, doc)
        newest = head_of(name, doc)
        written.append(newest)
