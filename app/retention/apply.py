"""Applying a retention plan: dry run unless confirmed; each backup that no reason keeps is marked
deleted in the catalog (its row stays, for the record), audited with its reason, then its manifest root
is removed from storage (docs/FORMAT.md section 7: catalog row, then manifest root; the packs no root
needs go later, by garbage collection). WAL that nothing needs is removed likewise, row then object."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete

from app import clock
from app.catalog import audit
from app.catalog.backups import USABLE_STATES
from app.catalog.db import transaction
from app.catalog.holds import is_held
from app.catalog.models import Backup, WalSegment
from app.context import Context
from app.gc.regions import delete_everywhere
from app.repo.format import Kind
from app.retention.plan import RetentionPlan, WalThinning
from app.wal import names

_WAL_BATCH = 500


@dataclass
class ApplyReport:
    dry_run: bool
    deleted: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    wal_deleted: int = 0
    wal_bytes: int = 0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "deleted": self.deleted,
            "skipped": self.skipped,
            "wal_deleted": self.wal_deleted,
            "wal_bytes": self.wal_bytes,
            "problems": self.problems,
        }


def apply_plan(ctx: Context, plan: RetentionPlan, *, confirm: bool, actor: str | None) -> ApplyReport:
    if not confirm:
        return ApplyReport(
            dry_run=True,
            deleted=[b.id for b in plan.deletions],
            wal_deleted=sum(len(w.names) for w in plan.wal),
            wal_bytes=sum(w.bytes for w in plan.wal),
        )
    report = ApplyReport(dry_run=False)
    for planned in plan.deletions:
        outcome = _delete_backup(ctx, planned.id, plan, actor)
        if isinstance(outcome, str):
            report.skipped.append({"backup": planned.id, "why": outcome})
        else:
            report.deleted.append(planned.id)
            report.problems.extend(outcome)
    for thinning in plan.wal:
        deleted, size = _thin_wal(ctx, thinning, actor)
        report.wal_deleted += deleted
        report.wal_bytes += size
    return report


def _delete_backup(ctx: Context, backup_id: str, plan: RetentionPlan, actor: str | None) -> str | list[str]:
    """Why it was left alone (it changed since the plan was made); else the regions where its manifest
    could not be deleted (an empty list: deleted everywhere)."""
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        row = session.get(Backup, backup_id)
        if row is None or row.state not in USABLE_STATES:
            return f"its state is now {row.state if row else 'unknown'}"
        if is_held(session, row):
            return "a legal hold was placed on it after the plan was made"
        row.state, row.deleted_at = "deleted", clock.now()
        audit.append(
            session,
            "backup.deleted",
            backup_id,
            {
                "reason": "no retention rule keeps it",
                "type": row.type,
                "started_at": clock.iso(row.started_at),
                "policy": plan.policy.to_json(),
            },
            actor,
        )
    return delete_everywhere(ctx, Kind.MANIFESTS, backup_id)  # idempotent: a missing object is no error


def _thin_wal(ctx: Context, thinning: WalThinning, actor: str | None) -> tuple[int, int]:
    deleted = 0
    for start in range(0, len(thinning.names), _WAL_BATCH):
        batch = thinning.names[start : start + _WAL_BATCH]
        with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
            session.execute(
                delete(WalSegment).where(
                    WalSegment.source_id == thinning.source_id, WalSegment.name.in_(batch)
                )
            )
            audit.append(
                session,
                "wal.deleted",
                thinning.source,
                {
                    "reason": "outside the point-in-time recovery window and needed by no retained base backup",
                    "count": len(batch),
                    "first": batch[0],
                    "last": batch[-1],
                    "all_kept_from": clock.iso(thinning.kept_from),
                },
                actor,
            )
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(
                pool.map(lambda n: ctx.storage.delete(Kind.WAL, names.object_name(thinning.source, n)), batch)
            )
        deleted += len(batch)
    return deleted, thinning.bytes
