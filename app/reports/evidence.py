"""Evidence for a period, read from the catalog (and the keyring, the anchors and replication status):
plain JSON-ready data, no judgement here (that is `controls`)."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import clock
from app.catalog.audit import entry_json
from app.catalog.models import (
    AuditEntry,
    Backup,
    BackupVerification,
    Drill,
    Erasure,
    LegalHold,
    Source,
    Verification,
    WalArchive,
)
from app.context import Context
from app.errors import EquisplitError
from app.gdpr.ledger import erasure_json

#: Backup states that count as a success; the rest of the finished ones are failures.
SUCCEEDED = ("complete",)
FINISHED = ("complete", "partial", "failed", "interrupted", "deleted")


def collect(ctx: Context, start: datetime, end: datetime) -> dict[str, Any]:
    """Every piece of evidence the reports use, for backups, runs and events in [start, end)."""
    with ctx.sessions() as session:
        sources = list(session.scalars(select(Source)))
        names = {s.id: s.name for s in sources}
        kinds = {s.id: s.kind for s in sources}
        # Sources registered before the period ended are expected to have been backed up in it.
        expected = sorted(s.name for s in sources if clock.as_utc(s.created_at) < end)
        doc: dict[str, Any] = {
            "period": {"from": clock.iso(start), "to": clock.iso(end)},
            "generated_at": clock.iso(clock.now()),
            "backups": _backups(session, names, start, end, expected),
            "verification": _verification(session, start, end),
            "drills": _drills(session, names, start, end),
            "rpo": _rpo(ctx, session, names, kinds),
            "retention": _retention(ctx, session, names, start, end),
            "gdpr": _gdpr(session, names, start, end),
            "approvals": _actions(session, start, end, "approval.%"),
            "key_rotations": _actions(session, start, end, "keys.rotated"),
        }
    doc["encryption"] = _encryption(ctx, doc["key_rotations"])
    doc["replication"] = _replication(ctx)
    doc["audit"] = _audit(ctx)
    return doc


def _seconds(b: Backup) -> float | None:
    if b.finished_at is None:
        return None
    return round((clock.as_utc(b.finished_at) - clock.as_utc(b.started_at)).total_seconds(), 3)


def _backups(
    session: Session, names: dict[int, str], start: datetime, end: datetime, expected: list[str]
) -> dict[str, Any]:
    rows = list(
        session.scalars(
            select(Backup)
            .where(Backup.started_at >= start, Backup.started_at < end)
            .order_by(Backup.started_at)
        )
    )
    per: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for b in rows:
        per[(names.get(b.source_id, "?"), b.type)][b.state] += 1
    groups: list[dict[str, Any]] = []
    for (source, kind), states in sorted(per.items()):
        finished = sum(n for s, n in states.items() if s in FINISHED)
        ok = sum(n for s, n in states.items() if s in SUCCEEDED or s == "deleted")
        groups.append(
            {
                "source": source,
                "type": kind,
                "states": dict(states),
                "finished": finished,
                "succeeded": ok,
                "success_rate": round(ok / finished, 4) if finished else None,
            }
        )
    series = [
        {
            "id": b.id,
            "source": names.get(b.source_id, "?"),
            "type": b.type,
            "state": b.state,
            "started_at": clock.iso(b.started_at),
            "seconds": _seconds(b),
            "bytes_total": b.bytes_total,
            "bytes_stored": b.bytes_stored,
            "verified_at": clock.iso(b.verified_at),
            "damaged": b.damaged_at is not None,
        }
        for b in rows
    ]
    finished = sum(int(g["finished"] or 0) for g in groups)
    ok = sum(int(g["succeeded"] or 0) for g in groups)
    backed_up = {g["source"] for g in groups if g["succeeded"]}
    return {
        "count": len(rows),
        #: Sources registered before the period ended with no successful backup in it.
        "sources_without_backup": [name for name in expected if name not in backed_up],
        "finished": finished,
        "succeeded": ok,
        "success_rate": round(ok / finished, 4) if finished else None,
        "per_policy": groups,
        "series": series,
    }


def _verification(session: Session, start: datetime, end: datetime) -> dict[str, Any]:
    runs = list(
        session.scalars(
            select(Verification)
            .where(Verification.started_at >= start, Verification.started_at < end)
            .order_by(Verification.started_at)
        )
    )
    live = list(session.scalars(select(Backup.id).where(Backup.state == "complete", Backup.started_at < end)))
    checked = set(
        session.scalars(
            select(BackupVerification.backup_id).where(
                BackupVerification.checked_at >= start, BackupVerification.checked_at < end
            )
        )
    )
    damaged = set(
        session.scalars(
            select(BackupVerification.backup_id).where(
                BackupVerification.checked_at >= start,
                BackupVerification.checked_at < end,
                BackupVerification.outcome == "damaged",
            )
        )
    )
    covered = [b for b in live if b in checked]
    return {
        "runs": len(runs),
        "outcomes": dict(Counter(r.outcome for r in runs)),
        "bytes_read": sum(r.bytes_read for r in runs),
        "complete_backups": len(live),
        "backups_verified": len(covered),
        "coverage": round(len(covered) / len(live), 4) if live else None,
        "damaged_backups": sorted(damaged),
        "recent": [
            {"id": r.id, "started_at": clock.iso(r.started_at), "outcome": r.outcome, "backups": r.backups}
            for r in runs[-20:]
        ],
    }


def _drills(session: Session, names: dict[int, str], start: datetime, end: datetime) -> dict[str, Any]:
    rows = list(
        session.scalars(
            select(Drill).where(Drill.started_at >= start, Drill.started_at < end).order_by(Drill.started_at)
        )
    )
    return {
        "count": len(rows),
        "outcomes": dict(Counter(d.outcome for d in rows)),
        "series": [
            {
                "id": d.id,
                "source": names.get(d.source_id, "?"),
                "kind": d.kind,
                "mode": d.mode,
                "outcome": d.outcome,
                "started_at": clock.iso(d.started_at),
                "rto_seconds": d.rto_seconds,
                "rto_target_seconds": d.rto_target_seconds,
                "rpo_seconds": d.rpo_seconds,
            }
            for d in rows
        ],
    }


def _rpo(ctx: Context, session: Session, names: dict[int, str], kinds: dict[int, str]) -> dict[str, Any]:
    now = clock.now()
    target = ctx.settings.max_data_loss_seconds
    sources = []
    archived = set()
    for row in session.scalars(select(WalArchive)):
        archived.add(row.source_id)
        newest = clock.as_utc(row.newest_record_at) if row.newest_record_at else None
        sources.append(
            {
                "source": names.get(row.source_id, "?"),
                "newest_record_at": clock.iso(newest),
                "rpo_seconds": round((now - newest).total_seconds(), 1) if newest else None,
            }
        )
    # A PostgreSQL source that never archived WAL has nothing bounding its data loss.
    for source_id, kind in kinds.items():
        if kind == "postgres" and source_id not in archived:
            sources.append({"source": names[source_id], "newest_record_at": None, "rpo_seconds": None})
    # File sources: the achieved RPO is the age of the newest complete backup.
    for source_id, kind in kinds.items():
        if kind != "files":
            continue
        newest_backup = session.scalar(
            select(func.max(Backup.started_at)).where(
                Backup.source_id == source_id, Backup.state == "complete"
            )
        )
        sources.append(
            {
                "source": names[source_id],
                "newest_record_at": clock.iso(newest_backup),
                "rpo_seconds": round((now - clock.as_utc(newest_backup)).total_seconds(), 1)
                if newest_backup
                else None,
            }
        )
    return {"target_seconds": target, "sources": sorted(sources, key=lambda s: s["source"])}


def _retention(
    ctx: Context, session: Session, names: dict[int, str], start: datetime, end: datetime
) -> dict[str, Any]:
    s = ctx.settings
    holds = list(session.scalars(select(LegalHold).order_by(LegalHold.id)))
    deletions = _actions(session, start, end, "backup.deleted")
    return {
        "policy": {
            "daily": s.backup_retention_daily,
            "weekly": s.backup_retention_weekly,
            "monthly": s.backup_retention_monthly,
            "yearly": s.backup_retention_yearly,
            "minimum": s.backup_retention_minimum,
            "pitr_window_days": s.backup_pitr_window_days,
        },
        "deletions": deletions,
        "wal_deletions": len(_actions(session, start, end, "wal.deleted")),
        "holds_in_force": [
            {
                "id": h.id,
                "backup": h.backup_id,
                "source": names.get(h.source_id) if h.source_id else None,
                "reason": h.reason,
                "created_at": clock.iso(h.created_at),
                "created_by": h.created_by,
            }
            for h in holds
            if h.released_at is None
        ],
        "holds_events": _actions(session, start, end, "hold.%"),
        "held_backups_deleted": [
            d for d in deletions if any(h.backup_id == d["object"] and h.released_at is None for h in holds)
        ],
    }


def _gdpr(session: Session, names: dict[int, str], start: datetime, end: datetime) -> dict[str, Any]:
    return {
        "requests": [
            erasure_json(e, names.get(e.source_id, "?"))
            for e in session.scalars(select(Erasure).order_by(Erasure.id))
        ],
        "reapplications": _actions(session, start, end, "gdpr.reapplied"),
        "reapplication_failures": _actions(session, start, end, "gdpr.reapply_failed"),
    }


def _actions(session: Session, start: datetime, end: datetime, pattern: str) -> list[dict[str, Any]]:
    query = select(AuditEntry).where(AuditEntry.at >= start, AuditEntry.at < end).order_by(AuditEntry.id)
    query = (
        query.where(AuditEntry.action.like(pattern))
        if "%" in pattern
        else query.where(AuditEntry.action == pattern)
    )
    return [entry_json(e) for e in session.scalars(query)]


def _encryption(ctx: Context, rotations: list[dict[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {"algorithm": "AES-256-GCM", "rotations": len(rotations)}
    try:
        ring = ctx.repository.keyring
    except EquisplitError as exc:  # no key here: the report says so instead of failing whole
        doc["error"] = f"keyring not readable: {exc}"
        return doc
    created = sorted(ring.created.values())
    doc.update(
        data_keys=len(ring.data_keys),
        current_key_id=ring.current_key_id.hex(),
        current_key_created_at=ring.created.get(ring.current_key_id),
        oldest_key_created_at=created[0] if created else None,
        last_rotation=rotations[-1]["at"] if rotations else None,
    )
    return doc


def _replication(ctx: Context) -> dict[str, Any]:
    from app.replication.status import replication_status

    try:
        return {"regions": [r.to_json() for r in replication_status(ctx)]}
    except EquisplitError as exc:
        return {"regions": [], "error": f"replication status not readable: {exc}"}


def _audit(ctx: Context) -> dict[str, Any]:
    from app.audit.service import verify_trail

    try:
        return verify_trail(ctx).to_json()
    except EquisplitError as exc:
        return {"ok": False, "problem": {"kind": "unreadable", "entry": None, "message": str(exc)}}
