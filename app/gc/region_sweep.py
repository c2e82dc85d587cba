"""A region's own garbage collection (docs/GC.md section 5): in a secondary region whose retention policy
dropped backups the primary (or another region) still keeps, the packs that no backup kept in that region
needs are removed there, and only there. The region's live set is what its kept backups need, plus what
the backups it is still to receive need (every backup the primary keeps that the region has not dropped);
packs younger than the grace period or than a running backup are never touched, and nothing is removed
while a restore or verification is registered as a reader. The replica row says `dropped`: replication
copies it again only if a backup copied later needs it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, column, exists, select, table, update
from sqlalchemy.orm import Session

from app.catalog import audit, backup_regions, locks, readers, replicas
from app.catalog.backups import USABLE_STATES
from app.catalog.models import Backup, BackupRegion, Chunk, GcCandidate, Pack, ReplicaObject
from app.context import Context
from app.errors import EquisplitError, IntegrityError, LockedError
from app.gc.live import LiveSet, add_manifest, create_tables
from app.replication.regions import configured_regions, is_enabled
from app.replication.run import LEASE as REPLICATION_LEASE
from app.repo.format import Kind
from app.storage import open_storage

log = logging.getLogger(__name__)

REGION_CHUNKS = "gc_region_chunks"
REGION_ROOTS = "gc_region_roots"
_chunks = table(REGION_CHUNKS, column("chunk_id"), column("tier"))
_roots = table(REGION_ROOTS, column("pack_id"))
_BATCH = 500


def regions_to_sweep(session: Session) -> list[str]:
    """Regions that dropped a backup still kept elsewhere (in the primary, or only in another region):
    only there can a pack be dead in the region and live in the repository."""
    other = BackupRegion.__table__.alias("other")
    kept_elsewhere = exists().where(
        other.c.backup_id == BackupRegion.backup_id, other.c.state == backup_regions.KEPT
    )
    query = (
        select(BackupRegion.region)
        .join(Backup, Backup.id == BackupRegion.backup_id)
        .where(
            BackupRegion.state == backup_regions.DELETED,
            Backup.state.in_(USABLE_STATES) | and_(Backup.state == "deleted", kept_elsewhere),
        )
        .distinct()
    )
    return sorted(session.scalars(query))


def sweep_regions(
    ctx: Context,
    conn: Connection,
    session: Session,
    cutoff: datetime,
    *,
    dry_run: bool,
    actor: str | None,
    check: Callable[[], None] | None = None,
) -> tuple[dict[str, list[str]], list[str]]:
    """Per region, the packs removed there (a dry run: that would be), and the problems met."""
    dropped: dict[str, list[str]] = {}
    problems: list[str] = []
    if not is_enabled(ctx.settings):
        return dropped, problems
    wanted = set(regions_to_sweep(session))
    for region in (r for r in configured_regions(ctx.settings) if r.name in wanted):
        if readers.running(session):
            problems.append(f"region {region.name}: not swept while a restore or verification runs")
            continue
        holder = locks.new_holder()
        lease = f"replicate:{region.name}"  # no replication pass copies into the region meanwhile
        try:
            locks.acquire(ctx.sessions, lease, holder, REPLICATION_LEASE)
        except LockedError:
            problems.append(f"region {region.name}: not swept, a replication pass is running there")
            continue
        try:
            dropped[region.name] = _sweep_region(
                ctx, conn, session, region.name, cutoff, dry_run, actor, check
            )
        except EquisplitError as exc:
            problems.append(f"region {region.name}: not swept: {exc.message}")
        finally:
            locks.release(ctx.sessions, lease, holder)
    return dropped, problems


def _sweep_region(
    ctx: Context,
    conn: Connection,
    session: Session,
    region: str,
    cutoff: datetime,
    dry_run: bool,
    actor: str | None,
    check: Callable[[], None] | None,
) -> list[str]:
    tables = (REGION_CHUNKS, REGION_ROOTS)
    create_tables(conn, tables)
    live = LiveSet()
    there = Context(ctx.settings, region=region)
    try:
        for backup, _, _ in backup_regions.in_region(session, region):
            # The primary's copy when it has one (the region may not have it yet), else the region's.
            repo = ctx.repository if backup.state in USABLE_STATES else there.repository
            where = "" if backup.state in USABLE_STATES else f" (kept only in region {region})"
            add_manifest(conn, repo, backup.id, live, where, tables)
    finally:
        there.close()
    session.commit()
    if check is not None:
        check()  # the GC lease is still ours
    dead = _dead_packs(session, region, cutoff)
    if dry_run or not dead:
        return [pack_id for pack_id, _ in dead]
    done: list[str] = []
    for start in range(0, len(dead), _BATCH):
        batch = dead[start : start + _BATCH]
        _drop(ctx, session, region, batch, actor)
        done.extend(_delete_objects(region, ctx, [p for p, _ in batch]))
    return done


def _dead_packs(session: Session, region: str, cutoff: datetime) -> list[tuple[str, int]]:
    """Packs the region holds (or is to hold) that no chunk of its live set is indexed in, no root of
    it names, older than `cutoff`, and not a candidate of the primary's collection (that one decides)."""
    live_in_pack = (
        select(Chunk.id)
        .join(_chunks, (_chunks.c.chunk_id == Chunk.id) & (_chunks.c.tier == Chunk.tier))
        .where(Chunk.pack_id == Pack.id)
        .exists()
    )
    query = (
        select(Pack.id, Pack.size)
        .join(ReplicaObject, and_(ReplicaObject.name == Pack.id, ReplicaObject.kind == Kind.PACKS))
        .where(
            ReplicaObject.region == region,
            ReplicaObject.state != replicas.DROPPED,
            Pack.created_at < cutoff,
            ~live_in_pack,
            ~select(_roots.c.pack_id).where(_roots.c.pack_id == Pack.id).exists(),
            ~select(GcCandidate.pack_id).where(GcCandidate.pack_id == Pack.id).exists(),
        )
        .order_by(Pack.id)
    )
    return [(pack_id, size) for pack_id, size in session.execute(query)]


def _drop(
    ctx: Context, session: Session, region: str, batch: list[tuple[str, int]], actor: str | None
) -> None:
    """Rows first (state `dropped`) with one audit entry per pack, then the caller deletes the objects."""
    entries: list[tuple[str, str | None, dict[str, Any]]] = [
        ("pack.deleted", pack_id, {"region": region, "reason": f"no backup kept in region {region} needs it",
                                   "bytes": size})
        for pack_id, size in batch
    ]  # fmt: skip
    with ctx.catalog_write_lock:
        session.execute(
            update(ReplicaObject)
            .where(
                ReplicaObject.region == region,
                ReplicaObject.kind == Kind.PACKS,
                ReplicaObject.name.in_([p for p, _ in batch]),
            )
            .values(state=replicas.DROPPED, error=None)
        )
        audit.append_many(session, entries, actor)
        session.commit()


def _delete_objects(region: str, ctx: Context, names: list[str]) -> list[str]:
    """Delete the objects in the region (a missing one is no error); the ones deleted."""
    from app.settings import region_url

    storage = open_storage(region_url(ctx.settings, region))
    done = []
    try:
        for name in names:
            try:
                storage.delete(Kind.PACKS, name)
            except EquisplitError as exc:
                raise IntegrityError(
                    f"packs/{name} not deleted in region {region}", detail=exc.message
                ) from exc
            done.append(name)
    finally:
        storage.close()
    return done
