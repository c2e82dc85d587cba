"""Bring anchored audit entries back into a catalog whose trail ends before the newest anchor (a lost
or truncated catalog), as `catalog rebuild` does. Only a trail that is a prefix of the anchored one is
extended; one that diverges is left as it is and said so: rewriting it would hide what happened."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app import clock
from app.audit.anchors import anchor_names, read_anchor
from app.catalog.audit import GENESIS
from app.catalog.models import AuditEntry
from app.repo.repository import Repository


@dataclass
class TrailRecovery:
    """What a rebuild did with the trail: entries brought back, up to which id, and anything it could not."""

    restored: int = 0
    catalog_head: int = 0
    anchored_head: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "restored": self.restored,
            "catalog_head": self.catalog_head,
            "anchored_head": self.anchored_head,
            "notes": self.notes,
        }


def restore_from_anchors(session: Session, repo: Repository) -> TrailRecovery:
    """Insert, with their original ids and hashes, the anchored entries after the catalog's head, when
    the catalog's trail is a prefix of the anchored one. Entries appended after the newest anchor were
    never sealed and cannot come back (docs/AUDIT.md section 3)."""
    names = anchor_names(repo)
    head_id = session.scalar(select(func.max(AuditEntry.id))) or 0
    report = TrailRecovery(catalog_head=head_id)
    if not names:
        report.notes.append("no audit anchor in storage: nothing to bring back")
        return report
    report.anchored_head = int(names[-1][len("anchor-") :])
    if head_id >= report.anchored_head:
        return report
    head_hash = (
        session.scalar(select(AuditEntry.hash).where(AuditEntry.id == head_id)) if head_id else GENESIS
    )
    prev = head_hash or GENESIS
    for name in names:
        if int(name[len("anchor-") :]) <= head_id:
            continue
        for item in read_anchor(repo, name)["entries"]:
            if int(item["id"]) <= head_id:
                continue
            if item["prev_hash"] != prev:
                report.notes.append(
                    f"the catalog's trail diverges from {name} at entry {item['id']}: nothing brought back from "
                    "there on; `audit verify` names the difference"
                )
                return _finish(session, report)
            session.add(
                AuditEntry(
                    id=int(item["id"]),
                    at=clock.parse_iso(item["at"]),
                    actor=item["actor"],
                    action=item["action"],
                    object=item["object"],
                    detail=item["detail"],
                    prev_hash=item["prev_hash"],
                    hash=item["hash"],
                )
            )
            prev = item["hash"]
            report.restored += 1
    return _finish(session, report)


def _finish(session: Session, report: TrailRecovery) -> TrailRecovery:
    session.flush()
    if report.restored and session.get_bind().dialect.name == "postgresql":
        # Rows inserted with their ids: the next append must not take one of them.
        session.execute(
            text("SELECT setval(pg_get_serial_sequence('audit_log', 'id'), (SELECT max(id) FROM audit_log))")
        )
    if report.restored:
        report.notes.append(
            f"brought back {report.restored} audit entries from anchors (up to entry {report.anchored_head}); "
            "entries appended after the newest anchor were never sealed and are lost"
        )
    return report
