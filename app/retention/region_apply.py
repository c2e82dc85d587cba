"""Applying each secondary region's retention plan (docs/RETENTION.md section 5): a backup the region's
policy drops is marked deleted there (table `backup_regions`, the primary's row untouched), its replica row
goes (replication never copies it again), one audit entry `backup.deleted` names the region and the reason,
then its manifest is removed from the region's storage. The packs only it needed there go by the region's
garbage collection (docs/GC.md section 5)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select

from app import clock
from app.catalog import audit, backup_regions
from app.catalog.backups import USABLE_STATES
from app.catalog.db import transaction
from app.catalog.holds import is_held
from app.catalog.models import Backup, ReplicaObject
from app.context import Context
from app.errors import EquisplitError
from app.repo.format import Kind
from app.retention.plan import RetentionPlan
from app.retention.region_wal import thin_region_wal
from app.retention.regions import RegionPlan
from app.settings import region_url
from app.storage import open_storage

_BATCH = 200


@dataclass
class RegionsApplied:
    deleted: dict[str, list[str]] = field(default_factory=dict)  # region -> backup ids
    skipped: list[dict[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    wal_deleted: dict[str, int] = field(default_factory=dict)  # region -> WAL files


def delete_in_regions(ctx: Context, plan: RetentionPlan, actor: str | None) -> RegionsApplied:
    """Every region's deletions, then its WAL thinning."""
    done = RegionsApplied()
    deleted, skipped, problems = done.deleted, done.skipped, done.problems
    for region in plan.regions:
        doomed = plan.region_deletions(region)
        marked_all: list[str] = []
        for start in range(0, len(doomed), _BATCH):
            batch = [b.id for b in doomed[start : start + _BATCH]]
            marked, left = _mark_deleted(ctx, region, batch, actor)
            marked_all.extend(marked)
            skipped.extend({"backup": b, "region": region.region, "why": why} for b, why in left)
            problems.extend(_delete_manifests(ctx, region.region, marked))
        deleted[region.region] = marked_all
        done.wal_deleted[region.region] = 0
        for thinning in region.wal:
            count, trouble = thin_region_wal(ctx, region.region, thinning, actor)
            done.wal_deleted[region.region] += count
            problems.extend(trouble)
    return done


def _mark_deleted(
    ctx: Context, region: RegionPlan, backup_ids: list[str], actor: str | None
) -> tuple[list[str], list[tuple[str, str]]]:
    """In one transaction, each backup re-read and, unless it changed since the plan, marked deleted in
    the region with an audit entry of its own."""
    marked: list[str] = []
    left: list[tuple[str, str]] = []
    entries: list[tuple[str, str | None, dict[str, Any]]] = []
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        rows = {b.id: b for b in session.scalars(select(Backup).where(Backup.id.in_(backup_ids)))}
        for backup_id in backup_ids:
            row = rows.get(backup_id)
            fate = backup_regions.state_in(session, backup_id, region.region)
            only_here = (
                row is not None and row.state == "deleted" and fate is not None and fate.state == "kept"
            )
            if row is None or not (row.state in USABLE_STATES or only_here):
                left.append((backup_id, f"its state is now {row.state if row else 'unknown'}"))
                continue
            if fate is not None and fate.state == backup_regions.DELETED:
                left.append((backup_id, f"already deleted in region {region.region}"))
                continue
            if is_held(session, row):
                left.append((backup_id, "a legal hold was placed on it after the plan was made"))
                continue
            reason = f"no retention rule of region {region.region} keeps it"
            backup_regions.record(session, backup_id, region.region, backup_regions.DELETED, reason)
            session.execute(
                delete(ReplicaObject).where(
                    ReplicaObject.region == region.region,
                    ReplicaObject.kind == Kind.MANIFESTS,
                    ReplicaObject.name == backup_id,
                )
            )
            marked.append(backup_id)
            entries.append(
                (
                    "backup.deleted",
                    backup_id,
                    {
                        "region": region.region,
                        "reason": reason,
                        "type": row.type,
                        "started_at": clock.iso(row.started_at),
                        "in_primary": "deleted" if only_here else "kept",
                        "policy": region.policy.to_json(),
                    },
                )
            )
        audit.append_many(session, entries, actor)
    return marked, left


def _delete_manifests(ctx: Context, region: str, backup_ids: list[str]) -> list[str]:
    """The manifests' objects in the region (a missing one is no error); problems are returned, named."""
    if not backup_ids:
        return []
    storage = open_storage(region_url(ctx.settings, region))

    def one(name: str) -> str | None:
        try:
            storage.delete(Kind.MANIFESTS, name)
        except EquisplitError as exc:
            return f"region {region}: manifests/{name} not deleted: {exc.message}"
        return None

    try:
        with ThreadPoolExecutor(min(8, len(backup_ids))) as pool:
            return [p for p in pool.map(one, backup_ids) if p]
    finally:
        storage.close()
