"""One garbage collection (docs/GC.md): gather the live set, sweep the candidates that are ready, mark
new candidates and repack sparse packs; asked to, with a grace period of 0, sweep once more (a fresh running set
and live set) so what is safe to delete goes in the same run. Dry run unless confirmed. A confirmed run
holds the catalog lease `gc`: a second one at the same time is refused. Every deletion and every return
to the index is audited."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, column, delete, exists, select, table, update
from sqlalchemy.orm import Session

from app import clock
from app.archive.lock import is_locked
from app.catalog import audit, chunks
from app.catalog.locks import Lease
from app.catalog.models import Backup, Chunk, GcCandidate, Pack
from app.context import Context
from app.errors import EquisplitError, LockedError, ObjectNotFoundError
from app.gc import blockers
from app.gc.live import LIVE_CHUNKS, ROOT_PACKS, create_tables, gather
from app.gc.region_live import gather_regional
from app.gc.region_sweep import sweep_regions
from app.gc.regions import delete_many_everywhere, not_yet_copied
from app.gc.repack import RepackReport, repack
from app.repo.format import TIERS, Kind, Tier
from app.repo.pack import PackEntry
from app.storage.base import Thawing

log = logging.getLogger(__name__)

_live = table(LIVE_CHUNKS, column("chunk_id"), column("tier"))
_roots = table(ROOT_PACKS, column("pack_id"))
_BATCH = 500
_READERS = 8  # candidates' indexes read from storage at once
LEASE = "gc"
LEASE_TTL = timedelta(minutes=10)


@dataclass
class GcReport:
    dry_run: bool
    manifests: int = 0
    marked: list[str] = field(default_factory=list)
    marked_bytes: int = 0
    deleted: list[str] = field(default_factory=list)
    deleted_bytes: int = 0
    returned: list[str] = field(default_factory=list)  # candidates a manifest written since needs
    waiting: int = 0
    #: candidates whose live chunks' new packs some region has no copy of yet
    held_for_regions: list[str] = field(default_factory=list)
    repack: RepackReport | None = None
    #: per region, packs removed there only: no backup its own retention keeps needs them (section 5)
    region_dropped: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "manifests": self.manifests,
            "marked": self.marked,
            "marked_bytes": self.marked_bytes,
            "deleted": self.deleted,
            "deleted_bytes": self.deleted_bytes,
            "returned_to_index": self.returned,
            "waiting": self.waiting,
            "held_for_regions": self.held_for_regions,
            "repack": self.repack.to_json() if self.repack else None,
            "region_dropped": self.region_dropped,
            "problems": self.problems,
        }


def collect_garbage(
    ctx: Context, *, confirm: bool, actor: str | None = None, sweep_marked: bool = False
) -> GcReport:
    """A dry run (nothing written, no lease) unless `confirm`; a confirmed run holds the lease `gc` and
    raises LockedError (exit 10), having done nothing, while another holds it. With `sweep_marked` and
    a grace period of 0, what this run marks or repacks is swept in it too, where nothing blocks it."""
    report = GcReport(dry_run=not confirm)
    if not confirm:
        _collect(ctx, report, None, actor, sweep_marked=False)
        return report
    lease = Lease(ctx.sessions, LEASE, LEASE_TTL, ctx.catalog_write_lock)
    try:
        lease.take()
    except LockedError as exc:
        raise LockedError(
            "garbage collection is already running: another `gc run` holds the catalog lease",
            detail=exc.message,
            hint="nothing was done; let that run finish (a lease whose process died expires by itself "
            f"within {LEASE_TTL.total_seconds() / 60:.0f} minutes)",
        ) from exc
    try:
        _collect(ctx, report, lease, actor, sweep_marked=sweep_marked)
    finally:
        lease.give_back()
    return report


def _collect(
    ctx: Context, report: GcReport, lease: Lease | None, actor: str | None, *, sweep_marked: bool
) -> None:
    grace = timedelta(hours=ctx.settings.backup_gc_grace_hours)
    with ctx.engine.connect() as conn, Session(bind=conn) as session:
        report.manifests = _sweep_ready(ctx, conn, session, report, grace, lease, actor)
        cutoff = _cutoff(session, grace)
        _mark(ctx, session, report, cutoff, lease, actor)
        report.repack, problems = repack(
            ctx, session, cutoff, dry_run=report.dry_run, actor=actor, check=lease.check if lease else None
        )
        report.problems.extend(problems)
        report.region_dropped, problems = sweep_regions(
            ctx,
            conn,
            session,
            cutoff,
            dry_run=report.dry_run,
            actor=actor,
            check=lease.check if lease else None,
        )
        report.problems.extend(problems)
        if sweep_marked and not grace and (report.marked or report.repack.packs):
            # What this run marked is ready now unless a backup or reader blocks it: the same sweep as
            # the next run's, with its own running set and live set read afresh.
            report.waiting = 0
            _sweep_ready(ctx, conn, session, report, grace, lease, actor)
    report.problems = list(dict.fromkeys(report.problems))
    report.held_for_regions = list(dict.fromkeys(report.held_for_regions))


def _sweep_ready(
    ctx: Context,
    conn: Connection,
    session: Session,
    report: GcReport,
    grace: timedelta,
    lease: Lease | None,
    actor: str | None,
) -> int:
    """Read the running set, then the live set (docs/GC.md section 2), then sweep; the manifests read."""
    running_before = blockers.running(session)
    create_tables(conn)
    live = gather(ctx, conn)
    gather_regional(ctx, conn, live)  # backups only a region keeps (docs/GC.md section 5)
    session.commit()
    _sweep(ctx, session, report, running_before, grace, lease, actor)
    return live.manifests


def _sweep(
    ctx: Context,
    session: Session,
    report: GcReport,
    running: set[str],
    grace: timedelta,
    lease: Lease | None,
    actor: str | None,
) -> None:
    """The ready candidates, _BATCH at a time: their indexes read from storage in parallel, the catalog
    asked once per batch which of their chunks are live and where the index places them."""
    now = clock.now()
    present: dict[str, bool] = {}
    ready = []
    columns = (GcCandidate.pack_id, GcCandidate.size, GcCandidate.marked_at, GcCandidate.running, GcCandidate.reason)
    for cand in session.execute(select(*columns).order_by(GcCandidate.marked_at)):  # rows: commits expire none
        if clock.as_utc(cand.marked_at) > now - grace or blockers.still_running(cand.running, running):
            report.waiting += 1
        else:
            ready.append(cand)
    with ThreadPoolExecutor(_READERS) as pool:
        for start in range(0, len(ready), _BATCH):
            batch = ready[start : start + _BATCH]
            indexes = list(pool.map(lambda c: _read_index(ctx, c.pack_id, c.size), batch))
            ids = [e.chunk_id for index in indexes if not isinstance(index, str) for e in index[0]]
            live = _live_among(session, ids)
            # Live and located in each pack's own tier: a cold copy never stands in for a standard one.
            where = {tier: chunks.locate(session, [c for c, t in live if t == tier], tier) for tier in TIERS}
            rooted = _rooted(session, [c.pack_id for c in batch])
            doomed: list[tuple[str, dict[str, Any]]] = []
            for cand, index in zip(batch, indexes, strict=True):
                if isinstance(index, str):
                    index = _frozen_cold_index(ctx, session, cand) or index
                if isinstance(index, str):  # its chunk ids cannot be known: never delete it blind
                    report.problems.append(f"pack {cand.pack_id} kept: its index cannot be read ({index})")
                    report.waiting += 1
                    continue
                verdict = _judge(ctx, session, report, cand, index, live, where, rooted, present, lease, actor)
                if verdict is not None:
                    doomed.append(verdict)
            _delete_packs(ctx, session, doomed, report, lease, actor)


def _read_index(ctx: Context, pack_id: str, size: int) -> tuple[list[PackEntry], str] | str:
    """A candidate's own index and tier (no entries if the pack is gone already), or why it cannot be
    read."""
    try:
        return ctx.repository.read_pack_index_tier(pack_id, size)
    except ObjectNotFoundError:
        return [], Tier.STANDARD
    except EquisplitError as exc:
        return exc.message


def _frozen_cold_index(ctx: Context, session: Session, cand: Row[Any]) -> tuple[list[PackEntry], str] | None:
    """A cold pack in a class that must be thawed (GLACIER, DEEP_ARCHIVE) has an index no sweep can read
    without a retrieval. Its chunks left the index at marking, so only a backup running then could have
    used them, and only an archive dedups against cold copies: when none of its blockers was an archive,
    nothing can need it, and it is swept as holding no live chunk (docs/ARCHIVE.md). Else None."""
    storage = ctx.storage
    if not isinstance(storage, Thawing):
        return None
    if session.scalar(select(Pack.tier).where(Pack.id == cand.pack_id)) != Tier.COLD:
        return None
    state = storage.thaw_state(Kind.PACKS, cand.pack_id)
    if state is None or state.readable:
        return None
    blockers = list(cand.running.get("backups", []))
    if blockers and session.scalar(
        select(exists().where(Backup.id.in_(blockers), Backup.type == "archive"))
    ):
        return None
    return [], Tier.COLD


def _rooted(session: Session, pack_ids: list[str]) -> set[str]:
    """The packs of `pack_ids` that a manifest root names."""
    return set(session.scalars(select(_roots.c.pack_id).where(_roots.c.pack_id.in_(pack_ids))))


def _judge(
    ctx: Context,
    session: Session,
    report: GcReport,
    cand: Row[Any],
    index: tuple[list[PackEntry], str],
    live: set[tuple[str, str]],
    where_by_tier: dict[str, dict[str, chunks.ChunkLocation]],
    rooted: set[str],
    present: dict[str, bool],
    lease: Lease | None,
    actor: str | None,
) -> tuple[str, dict[str, Any]] | None:
    """Keep a ready candidate waiting, return it to the index, or doom it (returned, for deletion)."""
    # A live chunk of its index is needed from it unless the chunk index holds it in another pack
    # storage has (a repacked pack's live chunks were copied; a chunk may be stored twice). Both in the
    # pack's own tier (its index's type says which).
    entries, tier = index
    where = where_by_tier[tier]
    live_ids = [e.chunk_id for e in entries if (e.chunk_id, tier) in live]
    homeless = [c for c in live_ids if c not in where or where[c].pack_id == cand.pack_id]
    elsewhere = {where[c].pack_id for c in live_ids if c in where and where[c].pack_id != cand.pack_id}
    gone = sorted(p for p in elsewhere if not _present(ctx, p, present))
    if gone:
        report.problems.append(
            f"pack {cand.pack_id} kept: pack(s) {gone} said to hold its live chunks are missing from storage"
        )
        report.waiting += 1
        return None
    needed = bool(homeless) or cand.pack_id in rooted
    if not needed and elsewhere and not_yet_copied(ctx, session, cand.pack_id, elsewhere):
        report.held_for_regions.append(cand.pack_id)  # a region's backups still read them from it
        report.waiting += 1
        return None
    if needed:
        report.returned.append(cand.pack_id)
        if report.dry_run:
            return None
        if lease:
            lease.check()
        with ctx.catalog_write_lock:
            chunks.record_pack(session, cand.pack_id, cand.size, entries, None, tier)
            session.execute(delete(GcCandidate).where(GcCandidate.pack_id == cand.pack_id))
            audit.append(
                session,
                "gc.returned",
                cand.pack_id,
                {"reason": "a manifest written after its chunks left the index needs it"},
                actor,
            )
            session.commit()
        return None
    if tier == Tier.COLD:  # an archive's pack may be locked (S3 Object Lock): never delete it early
        info = ctx.storage.stat(Kind.PACKS, cand.pack_id)
        if info is not None and is_locked(info.retain_until):
            report.problems.append(
                f"pack {cand.pack_id} kept: locked by S3 Object Lock until {clock.iso(info.retain_until)}"
            )
            report.waiting += 1
            return None
    report.deleted.append(cand.pack_id)
    report.deleted_bytes += cand.size
    if report.dry_run:
        return None
    why = (
        f"its live chunks were copied to {sorted(elsewhere)} (repacked)"
        if elsewhere
        else f"no kept backup needs it ({cand.reason})"
    )
    return cand.pack_id, {"reason": f"{why}; marked {clock.iso(cand.marked_at)}", "bytes": cand.size}


def _delete_packs(
    ctx: Context,
    session: Session,
    doomed: list[tuple[str, dict[str, Any]]],
    report: GcReport,
    lease: Lease | None,
    actor: str | None,
) -> None:
    """Delete swept packs: their rows and one audit entry each in one transaction, then the objects in
    the primary and every region (catalog first, then the object: docs/FORMAT.md section 7)."""
    if not doomed:
        return
    ids = [pack_id for pack_id, _ in doomed]
    if lease:
        lease.check()
    with ctx.catalog_write_lock:
        session.execute(delete(Chunk).where(Chunk.pack_id.in_(ids)))
        session.execute(delete(Pack).where(Pack.id.in_(ids)))
        session.execute(delete(GcCandidate).where(GcCandidate.pack_id.in_(ids)))
        audit.append_many(session, [("pack.deleted", pack_id, detail) for pack_id, detail in doomed], actor)
        session.commit()
    report.problems.extend(delete_many_everywhere(ctx, Kind.PACKS, ids))


def _live_among(session: Session, ids: list[str]) -> set[tuple[str, str]]:
    """(id, tier) of each of `ids` live in a tier."""
    found: set[tuple[str, str]] = set()
    for start in range(0, len(ids), _BATCH):
        batch = ids[start : start + _BATCH]
        rows = session.execute(select(_live.c.chunk_id, _live.c.tier).where(_live.c.chunk_id.in_(batch)))
        found.update((chunk_id, tier) for chunk_id, tier in rows)
    return found


def _present(ctx: Context, pack_id: str, cache: dict[str, bool]) -> bool:
    if pack_id not in cache:
        cache[pack_id] = ctx.storage.stat(Kind.PACKS, pack_id) is not None
    return cache[pack_id]


def _cutoff(session: Session, grace: timedelta) -> datetime:
    """Packs created before this may be marked or repacked: older than the grace period and than
    every running backup."""
    cutoff = clock.now() - grace
    oldest_running = session.scalar(
        select(Backup.started_at).where(Backup.state == "running").order_by(Backup.started_at).limit(1)
    )
    if oldest_running is not None:
        cutoff = min(cutoff, clock.as_utc(oldest_running))
    return cutoff


def _mark(
    ctx: Context, session: Session, report: GcReport, cutoff: datetime, lease: Lease | None, actor: str | None
) -> None:
    """Packs none of whose indexed chunks is live, older than `cutoff`, named by no manifest root and
    not already waiting."""
    now = clock.now()
    live_in_pack = (
        select(Chunk.id)
        .join(_live, (_live.c.chunk_id == Chunk.id) & (_live.c.tier == Chunk.tier))
        .where(Chunk.pack_id == Pack.id)
        .exists()
    )
    query = select(Pack.id, Pack.size, Pack.chunk_count).where(
        Pack.created_at < cutoff,
        ~live_in_pack,
        ~select(_roots.c.pack_id).where(_roots.c.pack_id == Pack.id).exists(),
        ~select(GcCandidate.pack_id).where(GcCandidate.pack_id == Pack.id).exists(),
    )
    found = list(session.execute(query))
    report.marked = [row.id for row in found]
    report.marked_bytes = sum(row.size for row in found)
    if report.dry_run or not found:
        return
    if lease:
        lease.check()
    with ctx.catalog_write_lock:
        for start in range(0, len(found), _BATCH):
            batch = found[start : start + _BATCH]
            session.execute(delete(Chunk).where(Chunk.pack_id.in_([row.id for row in batch])))
            session.add_all(
                GcCandidate(
                    pack_id=row.id,
                    marked_at=now,
                    size=row.size,
                    chunk_count=row.chunk_count,
                    running={"backups": []},
                    reason="unreferenced",
                )
                for row in batch
            )
        audit.append(
            session,
            "gc.marked",
            None,
            {
                "packs": len(found),
                "bytes": report.marked_bytes,
                "reason": "no manifest in storage needs them",
            },
            actor,
        )
        session.commit()
        # Who may still name them: the backups running and the readers registered now (read after their
        # chunks left the index).
        session.execute(
            update(GcCandidate)
            .where(GcCandidate.pack_id.in_(report.marked))
            .values(running=blockers.record(blockers.running(session)))
        )
        session.commit()
