"""Applying a retention plan: dry run unless confirmed; each backup that no reason keeps is marked
deleted in the catalog (its row stays, for the record), audited with its reason, then its manifest root
is removed from storage (docs/FORMAT.md section 7: catalog row, then manifest root; the packs no root
needs go later, by garbage collection). WAL that nothing needs is removed likewise, row then object."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select

from app import clock
from app.archive.lock import locked_archives
from app.catalog import audit, backup_regions
from app.catalog.backups import USABLE_STATES
from app.catalog.db import transaction
from app.catalog.holds import hold_reasons
from app.catalog.models import Backup, WalSegment
from app.context import Context
from app.gc.regions import delete_many_everywhere
from app.repo.format import Kind
from app.retention.plan import RetentionPlan, WalThinning
from app.retention.region_apply import delete_in_regions
from app.wal import names

_WAL_BATCH = 500
_BACKUP_BATCH = 200


@dataclass
class ApplyReport:
    dry_run: bool
    deleted: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    wal_deleted: int = 0
    wal_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    #: Per secondary region, the backups its own policy deleted there (docs/RETENTION.md section 5).
    region_deleted: dict[str, list[str]] = field(default_factory=dict)
    #: Per secondary region, the WAL files its own thinning removed there.
    region_wal_deleted: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "deleted": self.deleted,
            "region_deleted": self.region_deleted,
            "region_wal_deleted": self.region_wal_deleted,
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
            region_deleted={r.region: [b.id for b in plan.region_deletions(r)] for r in plan.regions},
            region_wal_deleted={r.region: sum(len(w.names) for w in r.wal) for r in plan.regions},
        )
    report = ApplyReport(dry_run=False)
    # An archive whose manifest S3 Object Lock still retains is not deleted (docs/ARCHIVE.md): a delete
    # would only hide the locked object behind a delete marker.
    locked = locked_archives(ctx.storage, [b.id for b in plan.deletions if b.type == "archive"])
    report.skipped.extend(
        {"backup": backup_id, "why": f"locked by S3 Object Lock until {clock.iso(until)}"}
        for backup_id, until in sorted(locked.items())
    )
    ids = [b.id for b in plan.deletions if b.id not in locked]
    kept_in = {b.id: b.kept_in for b in plan.deletions if b.kept_in}
    for start in range(0, len(ids), _BACKUP_BATCH):
        marked, skipped = _delete_backups(ctx, ids[start : start + _BACKUP_BATCH], plan, actor, kept_in)
        report.skipped.extend({"backup": backup_id, "why": why} for backup_id, why in skipped)
        report.deleted.extend(marked)
        # idempotent: a missing object is no error; a region whose policy keeps it keeps its copy
        report.problems.extend(delete_many_everywhere(ctx, Kind.MANIFESTS, marked, spare=kept_in))
    regions = delete_in_regions(ctx, plan, actor)
    report.region_deleted, report.region_wal_deleted = regions.deleted, regions.wal_deleted
    report.skipped.extend(regions.skipped)
    report.problems.extend(regions.problems)
    for thinning in plan.wal:
        deleted, size = _thin_wal(ctx, thinning, actor)
        report.wal_deleted += deleted
        report.wal_bytes += size
    return report


def _delete_backups(
    ctx: Context,
    backup_ids: list[str],
    plan: RetentionPlan,
    actor: str | None,
    kept_in: dict[str, list[str]],
) -> tuple[list[str], list[tuple[str, str]]]:
    """In one transaction, each backup re-read and, unless it changed since the plan was made, marked
    deleted with an audit entry of its own. Returns the deleted ids and (id, why) of those left alone;
    the caller then deletes their manifests (catalog row, then manifest root)."""
    deleted: list[str] = []
    skipped: list[tuple[str, str]] = []
    entries: list[tuple[str, str | None, dict[str, Any]]] = []
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        rows = {b.id: b for b in session.scalars(select(Backup).where(Backup.id.in_(backup_ids)))}
        held, held_sources = hold_reasons(session)  # once, in this transaction: before any row changes
        for backup_id in backup_ids:
            row = rows.get(backup_id)
            if row is None or row.state not in USABLE_STATES:
                skipped.append((backup_id, f"its state is now {row.state if row else 'unknown'}"))
                continue
            if row.id in held or row.source_id in held_sources:
                skipped.append((backup_id, "a legal hold was placed on it after the plan was made"))
                continue
            for region in kept_in.get(backup_id, []):
                backup_regions.record(
                    session,
                    backup_id,
                    region,
                    backup_regions.KEPT,
                    "its retention policy keeps it",
                    row.state,
                )
            row.state, row.deleted_at = "deleted", clock.now()
            deleted.append(backup_id)
            entries.append(
                (
                    "backup.deleted",
                    backup_id,
                    {
                        "reason": "no retention rule keeps it",
                        "type": row.type,
                        "started_at": clock.iso(row.started_at),
                        "policy": plan.policy.to_json(),
                        "region": ctx.settings.primary_region,
                        "kept_in_regions": kept_in.get(backup_id, []),
                    },
                )
            )
        audit.append_many(session, entries, actor)
    return deleted, skipped


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
