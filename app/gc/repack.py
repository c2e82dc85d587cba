"""Repacking (docs/GC.md section 4): the live blobs of mostly-dead packs copied, still sealed, into new
packs; the chunk rows are repointed and each old pack becomes a candidate (reason `repacked`) that the
sweep deletes like any other once its grace has passed and its blockers have finished."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, column, delete, func, select, table, update
from sqlalchemy.orm import Session

from app import clock
from app.catalog import audit
from app.catalog.models import Backup, Chunk, GcCandidate, Pack
from app.context import Context
from app.errors import EquisplitError, IntegrityError
from app.gc import blockers
from app.gc.live import LIVE_CHUNKS, ROOT_PACKS
from app.repo.crypto import check_header
from app.repo.format import PACK_TRAILER, Kind, ObjectType, Tier
from app.repo.pack import PackBuilder, parse_trailer

log = logging.getLogger(__name__)

_live = table(LIVE_CHUNKS, column("chunk_id"), column("tier"))
#: Only standard packs are repacked: a cold one is not read back (a retrieval), docs/ARCHIVE.md.
_is_live = (_live.c.chunk_id == Chunk.id) & (_live.c.tier == Chunk.tier)
_roots = table(ROOT_PACKS, column("pack_id"))
REASON = "repacked"


@dataclass(frozen=True)
class SparsePack:
    """A pack chosen for repacking: its stored size and the bytes of its live blobs."""

    pack_id: str
    size: int
    chunk_count: int
    live_bytes: int
    live_chunks: int

    @property
    def unused(self) -> int:
        return self.size - self.live_bytes


@dataclass(frozen=True)
class Move:
    """One live blob: where the index had it, and where it is in the new pack."""

    chunk_id: str
    old_pack: str
    offset: int
    length: int
    raw_length: int


@dataclass
class RepackReport:
    threshold: float
    max_unused: float = 1.0
    packs: list[str] = field(default_factory=list)  # old packs repacked (a dry run: that would be)
    bytes: int = 0  # their stored size
    live_bytes: int = 0  # the live blobs copied out of them
    written: list[str] = field(default_factory=list)  # the new packs
    written_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "max_unused": self.max_unused,
            "packs": self.packs,
            "bytes": self.bytes,
            "live_bytes": self.live_bytes,
            "written": self.written,
            "written_bytes": self.written_bytes,
        }


def choose(session: Session, cutoff: datetime, threshold: float, max_unused: float = 1.0) -> list[SparsePack]:
    """The packs to repack, oldest first. Only packs older than `cutoff`, with some live chunk, named by
    no manifest root (a root addresses its entry chunks by pack and offset), not already a candidate, and
    written in the standard storage class (an archive-class pack is not read back: that costs a
    retrieval, and its copy would land in another class) may be chosen. Of those, every pack whose live
    blobs fill less than `threshold` of it; then, the emptiest first, packs holding a dead blob until
    the dead bytes left are at most `max_unused` of the bytes of every pack that stays (restic's
    `--max-unused`: dead <= max_unused / (1 - max_unused) * live)."""
    live_bytes = func.sum(Chunk.length)
    query = (
        select(Pack.id, Pack.size, Pack.chunk_count, live_bytes.label("live"), func.count().label("n"))
        .join(Chunk, Chunk.pack_id == Pack.id)
        .join(_live, _is_live)
        .outerjoin(Backup, Backup.id == Pack.backup_id)
        .where(
            Pack.created_at < cutoff,
            Pack.tier == Tier.STANDARD,
            Backup.storage_class.is_(None),
            ~select(_roots.c.pack_id).where(_roots.c.pack_id == Pack.id).exists(),
            ~select(GcCandidate.pack_id).where(GcCandidate.pack_id == Pack.id).exists(),
        )
        .group_by(Pack.id, Pack.size, Pack.chunk_count, Pack.created_at)
        .having((live_bytes < Pack.size * threshold) | (func.count() < Pack.chunk_count))
        .order_by(Pack.created_at, Pack.id)
    )
    eligible = [
        SparsePack(r.id, r.size, r.chunk_count, int(r.live), int(r.n)) for r in session.execute(query)
    ]
    chosen = {p.pack_id for p in eligible if p.live_bytes < p.size * threshold}
    if max_unused < 1:
        live, stored = _usage(session)
        unused = stored - live - sum(p.unused for p in eligible if p.pack_id in chosen)
        allowed = live * max_unused / (1 - max_unused)
        rest = [p for p in eligible if p.pack_id not in chosen and p.live_chunks < p.chunk_count]
        for sparse in sorted(rest, key=lambda p: p.unused / p.size, reverse=True):
            if unused <= allowed:
                break
            chosen.add(sparse.pack_id)
            unused -= sparse.unused
    return [p for p in eligible if p.pack_id in chosen]


def _usage(session: Session) -> tuple[int, int]:
    """The live bytes (indexed chunks the live set holds) and the stored bytes of every standard pack
    that is not a candidate: the repository as it stays (cold packs are never repacked)."""
    live = (
        select(Chunk.pack_id, func.sum(Chunk.length).label("live"))
        .join(_live, _is_live)
        .group_by(Chunk.pack_id)
        .subquery()
    )
    row = session.execute(
        select(func.coalesce(func.sum(live.c.live), 0), func.coalesce(func.sum(Pack.size), 0))
        .select_from(Pack)
        .outerjoin(live, live.c.pack_id == Pack.id)
        .where(
            Pack.tier == Tier.STANDARD,
            ~select(GcCandidate.pack_id).where(GcCandidate.pack_id == Pack.id).exists(),
        )
    ).one()
    return int(row[0]), int(row[1])


def repack(
    ctx: Context,
    session: Session,
    cutoff: datetime,
    *,
    dry_run: bool,
    actor: str | None,
    check: Callable[[], None] | None = None,
) -> tuple[RepackReport, list[str]]:
    """Repack the sparse packs (dry run: only name them). Returns the report and the problems met; a
    pack that cannot be repacked (unreadable, or its own index disagrees with the catalog) is named and
    left as it is. `check` is called before each repoint (the GC lease: it raises once lost)."""
    threshold, max_unused = ctx.settings.backup_gc_repack_below, ctx.settings.backup_gc_max_unused
    report = RepackReport(threshold, max_unused)
    problems: list[str] = []
    if threshold <= 0 and max_unused >= 1:
        return report, problems
    chosen = choose(session, cutoff, threshold, max_unused)
    if dry_run:
        report.packs = [p.pack_id for p in chosen]
        report.bytes = sum(p.size for p in chosen)
        report.live_bytes = sum(p.live_bytes for p in chosen)
        return report, problems
    target = ctx.repository.pack_target_size
    builder = PackBuilder()
    batch: list[SparsePack] = []
    moves: list[Move] = []
    for sparse in chosen:
        try:
            copied = _copy_live(ctx, session, sparse, builder)
        except EquisplitError as exc:
            problems.append(f"pack {sparse.pack_id} not repacked: {exc.message}")
            continue
        batch.append(sparse)
        moves.extend(copied)
        if builder.size >= target:
            if check:
                check()
            _commit(ctx, session, builder, batch, moves, report, problems, actor)
            builder, batch, moves = PackBuilder(), [], []
    if batch:
        if check:
            check()
        _commit(ctx, session, builder, batch, moves, report, problems, actor)
    return report, problems


def _copy_live(ctx: Context, session: Session, sparse: SparsePack, builder: PackBuilder) -> list[Move]:
    """Read the pack once and add its live blobs, as they are (sealed: never opened), to `builder`.
    Each blob is taken where the pack's own index puts it, and must be where the catalog says."""
    rows = list(
        session.execute(
            select(Chunk.id, Chunk.offset, Chunk.length, Chunk.raw_length)
            .join(_live, _is_live)
            .where(Chunk.pack_id == sparse.pack_id)
            .order_by(Chunk.offset)
        )
    )
    data = ctx.storage.get(Kind.PACKS, sparse.pack_id)
    if len(data) != sparse.size:
        raise IntegrityError(f"pack {sparse.pack_id} holds {len(data)} bytes, the catalog says {sparse.size}")
    index_len = parse_trailer(data[-PACK_TRAILER:], sparse.pack_id)
    start = len(data) - PACK_TRAILER - index_len
    if start < 0:
        raise IntegrityError(f"pack {sparse.pack_id}: index length {index_len} exceeds the pack")
    own = {e.chunk_id: e for e in ctx.repository.open_pack_index(sparse.pack_id, data[start:-PACK_TRAILER])}
    blobs = []
    for row in rows:
        entry = own.get(row.id)
        if entry is None or (entry.offset, entry.length) != (row.offset, row.length):
            raise IntegrityError(
                f"pack {sparse.pack_id}: its own index does not hold chunk {row.id} where the catalog says"
            )
        blob = data[entry.offset : entry.offset + entry.length]
        check_header(blob, ObjectType.CHUNK, row.id)
        blobs.append((row.id, blob, entry.raw_length))
    moves = []
    for chunk_id, blob, raw_length in blobs:
        offset = builder.size
        builder.add(chunk_id, blob, raw_length)
        moves.append(Move(chunk_id, sparse.pack_id, offset, len(blob), raw_length))
    return moves


def _commit(
    ctx: Context,
    session: Session,
    builder: PackBuilder,
    batch: list[SparsePack],
    moves: list[Move],
    report: RepackReport,
    problems: list[str],
    actor: str | None,
) -> None:
    """Make the new pack durable, then in one transaction: record it, repoint the moved chunks to it,
    take the old packs' other chunks out of the index and make the old packs candidates. Then record
    the backups running and the readers registered after that commit as the candidates' blockers."""
    repo = ctx.repository
    new_id = secrets.token_hex(32)
    data = repo.finish_pack(new_id, builder)
    repo.put_pack(new_id, data)
    stored = repo.storage.stat(Kind.PACKS, new_id)
    if stored is None or stored.size != len(data):
        problems.append(f"repacked pack {new_id} is not in storage at its size: nothing was repointed")
        return
    old = [p.pack_id for p in batch]
    now = clock.now()
    try:
        with ctx.catalog_write_lock:
            already = set(session.scalars(select(GcCandidate.pack_id).where(GcCandidate.pack_id.in_(old))))
            if already:  # another collection got there first: its repoint stands, this copy is not needed
                raise IntegrityError(f"packs {sorted(already)} became candidates meanwhile")
            session.add(
                Pack(id=new_id, size=len(data), chunk_count=len(moves), backup_id=None, created_at=now)
            )
            session.flush()
            rows = cast(Table, Chunk.__table__)
            repoint = (
                update(rows)
                .where(rows.c.id == bindparam("cid"), rows.c.pack_id == bindparam("old"))
                .values(pack_id=new_id, offset=bindparam("off"), length=bindparam("len"))
            )
            session.connection().execute(
                repoint,
                [{"cid": m.chunk_id, "old": m.old_pack, "off": m.offset, "len": m.length} for m in moves],
            )
            session.execute(delete(Chunk).where(Chunk.pack_id.in_(old)))  # the dead ones leave the index
            session.add_all(
                GcCandidate(
                    pack_id=p.pack_id,
                    marked_at=now,
                    size=p.size,
                    chunk_count=p.chunk_count,
                    running={"backups": []},
                    reason=REASON,
                )
                for p in batch
            )
            audit.append(
                session,
                "gc.repacked",
                new_id,
                {
                    "reason": f"live blobs of packs less than {report.threshold:.0%} live, or of the "
                    f"emptiest packs while dead bytes exceed {report.max_unused:.0%}, copied sealed",
                    "packs": old,
                    "bytes_before": sum(p.size for p in batch),
                    "bytes_after": len(data),
                    "chunks": len(moves),
                },
                actor,
            )
            session.commit()
    except BaseException as exc:
        session.rollback()
        try:  # no row names the new pack: it is garbage nobody can reach
            repo.storage.delete(Kind.PACKS, new_id)
        except EquisplitError:
            log.warning("repacked pack %s could not be removed after a failed commit", new_id)
        if not isinstance(exc, EquisplitError):
            raise
        problems.append(f"packs {old} not repacked: {exc.message}")
        return
    with ctx.catalog_write_lock:
        session.execute(
            update(GcCandidate)
            .where(GcCandidate.pack_id.in_(old))
            .values(running=blockers.record(blockers.running(session)))
        )
        session.commit()
    report.packs.extend(old)
    report.bytes += sum(p.size for p in batch)
    report.live_bytes += sum(m.length for m in moves)
    report.written.append(new_id)
    report.written_bytes += len(data)
