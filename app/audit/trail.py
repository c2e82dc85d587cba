"""Check the catalog's audit trail: every entry's hash, every link, and the head against the newest
anchor. The first problem is named with its entry and its kind (docs/AUDIT.md section 2)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.anchors import AnchorHead
from app.catalog.audit import GENESIS, entry_digest
from app.catalog.models import AuditEntry

#: Kinds of problem, in the words `audit verify` prints.
EDITED, REMOVED, REORDERED, TRUNCATED, REWRITTEN = "edited", "removed", "reordered", "truncated", "rewritten"


@dataclass
class TrailProblem:
    kind: str
    entry_id: int | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "entry": self.entry_id, "message": self.message}


@dataclass
class TrailCheck:
    """The outcome of one check: how many entries, the head, the anchor compared with, the first problem."""

    entries: int = 0
    head_id: int | None = None
    head_hash: str | None = None
    anchor: AnchorHead | None = None
    problem: TrailProblem | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head": {"id": self.head_id, "hash": self.head_hash},
            "anchor": self.anchor.to_json() if self.anchor else None,
            "problem": self.problem.to_json() if self.problem else None,
            "notes": self.notes,
        }


def check_trail(session: Session, anchor: AnchorHead | None) -> TrailCheck:
    """Walk the trail in id order, stopping at the first entry that does not verify; then compare the
    head with `anchor` (the newest sealed head), which catches a truncated or rewritten trail."""
    check = TrailCheck(anchor=anchor)
    prev = GENESIS
    prev_id: int | None = None
    at_anchor: str | None = None
    for entry in _entries(session):
        if entry.prev_hash != prev:
            check.problem = _broken_link(session, entry, prev_id)
            break
        if entry_digest(prev, entry) != entry.hash:
            check.problem = TrailProblem(
                EDITED,
                entry.id,
                f"audit entry {entry.id} ({entry.action}) was edited: its hash does not match its content",
            )
            break
        check.entries += 1
        if anchor is not None and entry.id == anchor.last_id:
            at_anchor = entry.hash
        prev, prev_id = entry.hash, entry.id
    check.head_id, check.head_hash = prev_id, (prev if prev_id is not None else None)
    if check.problem is None and anchor is not None:
        check.problem = _against_anchor(check, anchor, at_anchor)
    if anchor is None:
        check.notes.append("no anchor in storage: a truncated trail cannot be detected (run `audit anchor`)")
    return check


def _entries(session: Session, page: int = 1000) -> Iterator[AuditEntry]:
    """Every entry in id order, a page at a time (memory bounded by the page, not the trail)."""
    after: int | None = None
    while True:
        query = select(AuditEntry).order_by(AuditEntry.id).limit(page)
        if after is not None:
            query = query.where(AuditEntry.id > after)
        rows = list(session.scalars(query))
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].id
        session.expunge_all()


def _broken_link(session: Session, entry: AuditEntry, prev_id: int | None) -> TrailProblem:
    """An entry whose link does not point at the entry before it: content changed, moved, or a gap."""
    if entry_digest(entry.prev_hash, entry) != entry.hash:
        return TrailProblem(
            EDITED,
            entry.id,
            f"audit entry {entry.id} ({entry.action}) was edited: its hash does not match its content",
        )
    later = session.scalar(
        select(AuditEntry.id).where(AuditEntry.hash == entry.prev_hash, AuditEntry.id > entry.id).limit(1)
    )
    if later is not None:
        return TrailProblem(
            REORDERED,
            entry.id,
            f"audit entry {entry.id} follows entry {later}, which comes after it: the trail was reordered",
        )
    after = f"entry {prev_id}" if prev_id is not None else "the start of the trail"
    return TrailProblem(
        REMOVED,
        entry.id,
        f"audit entry {entry.id} does not follow {after}: an entry between them was removed "
        "(or the entry before it rewritten with a new hash)",
    )


def _against_anchor(check: TrailCheck, anchor: AnchorHead, at_anchor: str | None) -> TrailProblem | None:
    if check.head_id is None or check.head_id < anchor.last_id:
        return TrailProblem(
            TRUNCATED,
            anchor.last_id,
            f"the trail was truncated: it ends at entry {check.head_id or 0}, but {anchor.name} (sealed "
            f"{anchor.at}) holds entries up to {anchor.last_id}; `catalog rebuild` brings the anchored ones back",
        )
    if at_anchor != anchor.last_hash:
        return TrailProblem(
            REWRITTEN,
            anchor.last_id,
            f"audit entry {anchor.last_id} differs from the one sealed in {anchor.name}: the trail up to it was rewritten",
        )
    return None
