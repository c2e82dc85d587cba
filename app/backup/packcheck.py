"""Evidence that storage holds the packs a backup references (docs/FORMAT.md section 7).

The chunk index says which pack holds a chunk; it does not say the pack is still in storage. A backup
that dedups against the index would name a pack deleted behind the catalog's back and still call
itself complete. So before a manifest is written, every pack its chunks sit in that this backup did
not write itself is `stat`ed: one stat per distinct pack, never per chunk, each pack at most once per
backup (`PackCheck` caches the answers), several at once. On remote storage (S3), where every stat
is a request, one listing of the packs answers for all of them instead when it is done within as many
pages as the stats would take rounds (a listing page holds 1,000 names; a repository too big for that
is asked pack by pack, so the cost follows the backup, never the repository). A pack storage no
longer holds leaves the index (`forget_packs`), so the next backup stores its content again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.backup import known
from app.catalog import audit
from app.catalog.chunks import locate, packs_holding
from app.catalog.db import transaction
from app.catalog.models import Chunk, GcCandidate, Pack
from app.context import Context
from app.errors import ObjectNotFoundError
from app.repo.format import Kind, Tier
from app.storage.base import Storage

#: Stats in flight at once: S3 answers a HEAD in milliseconds, so latency, not bandwidth, bounds it.
STAT_THREADS = 16
#: Names one listing request returns (S3's ListObjectsV2 pages hold up to 1,000 keys).
LIST_PAGE = 1000
_BATCH = 2000


class PackCheck:
    """Which packs storage lacks; each pack is asked about once per instance (one backup)."""

    def __init__(self, storage: Storage, threads: int = STAT_THREADS) -> None:
        self._storage = storage
        self._threads = threads
        self._present: dict[str, bool] = {}
        self.stats = 0
        #: Every pack storage held when it was listed whole (remote storage): later questions of this
        #: backup are answered from it, as the stats' answers are kept.
        self._listing: set[str] | None = None

    def missing(self, pack_ids: Iterable[str]) -> set[str]:
        """The packs of `pack_ids` that storage does not hold."""
        asked = list(dict.fromkeys(pack_ids))
        wanted = [p for p in asked if p not in self._present]
        if wanted:
            if self._listing is None and self._storage.capabilities.remote and len(wanted) > 1:
                self._listing = self._listed(len(wanted))
            if self._listing is not None:
                found = [p in self._listing for p in wanted]
            else:
                with ThreadPoolExecutor(
                    min(self._threads, len(wanted)), thread_name_prefix="pack-stat"
                ) as pool:
                    found = list(pool.map(lambda p: self._storage.stat(Kind.PACKS, p) is not None, wanted))
            self._present.update(zip(wanted, found, strict=True))
            self.stats += len(wanted)
        return {p for p in asked if not self._present[p]}

    def _listed(self, wanted: int) -> set[str] | None:
        """Every pack in storage, if one listing ends within as many pages as `wanted` stats would take
        rounds; None (ask each) for a repository with more packs than that."""
        limit = -(-wanted // self._threads) * LIST_PAGE
        names = {info.name for info in islice(self._storage.list(Kind.PACKS), limit + 1)}
        return names if len(names) <= limit else None


@dataclass
class ReferenceCheck:
    """What a set of entries references that storage or the index cannot give back."""

    missing_packs: set[str] = field(default_factory=set)
    #: path -> why the file cannot be restored from what it references
    broken: dict[str, str] = field(default_factory=dict)
    #: missing pack -> the paths that reference it
    files_of: dict[str, list[str]] = field(default_factory=dict)
    packs_checked: int = 0

    @property
    def sound(self) -> bool:
        return not self.broken


@dataclass(frozen=True)
class Located:
    """The packs of a tier holding a set of chunk ids, and how many of the ids the index held there."""

    ids: frozenset[str]
    tier: str
    packs: frozenset[str]
    found: int


def locate_packs(ctx: Context, chunk_ids: Iterable[str], tier: str = Tier.STANDARD) -> Located:
    """Where the index puts `chunk_ids` in `tier`. A backup locates its parent's chunks on a thread
    while it walks (the lookups run in SQLite, outside the interpreter's lock), and `check_entries`
    takes the answer when the backup names exactly those chunks (an unchanged tree)."""
    # Sorted: the index is a B-tree on the id, and lookups in id order touch each of its pages once.
    ids = frozenset(chunk_ids)
    with ctx.sessions() as session:
        packs, found = _packs_of(session, sorted(ids), tier)
    return Located(ids, tier, frozenset(packs), found)


def check_entries(
    ctx: Context,
    entries: Sequence[dict[str, Any]],
    check: PackCheck,
    *,
    backup_id: str | None = None,
    tier: str = Tier.STANDARD,
    located: Located | None = None,
) -> ReferenceCheck:
    """Find the packs of `tier` (the backup's) that hold the chunks the file entries name and stat them
    (except those `backup_id` wrote: durable and indexed a moment ago); name each file that references
    a chunk the index holds no copy of in that tier, or a pack storage does not hold. `located` (from
    `locate_packs`, earlier in the same backup) answers where the chunks are when it covers exactly the
    chunks the entries name; the packs are stat'ed now either way."""
    named = {c for e in entries if e.get("type") == "file" for c in e.get("chunks", ())}
    wanted = sorted(named)
    with ctx.sessions() as session:
        if located is not None and located.tier == tier and located.ids == named:
            packs, found = set(located.packs), located.found
        elif located is not None and located.tier == tier and located.found == len(located.ids):
            # Every chunk of the parent was indexed when the backup started: only the chunks the parent
            # did not have are looked up now (an incremental's new ones), and the parent's packs are
            # stat'ed with them. A PostgreSQL incremental names ~32 chunks a MiB of the cluster, most
            # of them its parent's.
            rest = sorted(named - located.ids)
            packs, found_rest = _packs_of(session, rest, tier)
            packs |= located.packs
            found = len(named) - len(rest) + found_rest
        else:
            packs, found = _packs_of(session, wanted, tier)
        if backup_id is not None:
            packs -= _written_by(session, packs, backup_id)
    result = ReferenceCheck(packs_checked=len(packs))
    result.missing_packs = check.missing(packs)
    if not result.missing_packs and found == len(wanted):
        return result  # the usual case: no chunk-by-chunk lookup needed
    with ctx.sessions() as session:
        where = {chunk_id: loc.pack_id for chunk_id, loc in locate(session, wanted, tier).items()}
    unknown = set(wanted) - set(where)
    if unknown:
        # Garbage collection takes a candidate pack's chunks out of the index while the pack stays in
        # storage until its sweep; a backup that loaded the index earlier may use them, and the sweep
        # gives the pack back to the index once a manifest names them (docs/GC.md section 2).
        marked = _in_gc_candidates(ctx, unknown, tier)
        where.update(marked)
        result.missing_packs |= check.missing(set(marked.values()))
    for e in entries:
        if e.get("type") != "file":
            continue
        for chunk_id in e.get("chunks", ()):
            pack_id = where.get(chunk_id)
            if pack_id is None:
                result.broken[e["path"]] = f"its chunk {chunk_id} is not in the catalog's chunk index"
                break
            if pack_id in result.missing_packs:
                result.broken[e["path"]] = f"pack {pack_id} holding its chunks is missing from storage"
                result.files_of.setdefault(pack_id, []).append(e["path"])
                break
    return result


def _in_gc_candidates(ctx: Context, chunk_ids: set[str], tier: str) -> dict[str, str]:
    """chunk id -> pack, for the `chunk_ids` that a pack of `tier` marked by garbage collection holds
    (read from the packs' own indexes; a pack storage no longer holds is skipped: its chunks stay
    unknown)."""
    with ctx.sessions() as session:
        candidates = list(
            session.scalars(
                select(GcCandidate.pack_id).join(Pack, Pack.id == GcCandidate.pack_id).where(Pack.tier == tier)
            )
        )
    found: dict[str, str] = {}
    for pack_id in candidates:
        try:
            entries = ctx.repository.read_pack_index(pack_id)
        except ObjectNotFoundError:
            continue
        for entry in entries:
            if entry.chunk_id in chunk_ids:
                found.setdefault(entry.chunk_id, pack_id)
        if len(found) == len(chunk_ids):
            break
    return found


def _packs_of(session: Session, chunk_ids: list[str], tier: str) -> tuple[set[str], int]:
    """The distinct packs of `tier` holding `chunk_ids` and how many of the ids the index holds a copy
    of in that tier (`chunks.packs_holding`: a row per pack, not per chunk)."""
    return packs_holding(session.connection(), chunk_ids, tier)


def _written_by(session: Session, pack_ids: set[str], backup_id: str) -> set[str]:
    ids = list(pack_ids)
    own: set[str] = set()
    for start in range(0, len(ids), _BATCH):
        batch = ids[start : start + _BATCH]
        own.update(session.scalars(select(Pack.id).where(Pack.id.in_(batch), Pack.backup_id == backup_id)))
    return own


def forget_packs(
    ctx: Context,
    pack_ids: Iterable[str],
    *,
    backup_id: str | None,
    files_of: dict[str, list[str]] | None = None,
    actor: str | None = None,
) -> None:
    """Drop packs storage no longer holds from the index (their rows and their chunks' rows), so no
    backup dedups against them again, and audit each with the files it took out of `backup_id`."""
    gone = sorted(set(pack_ids))
    if not gone:
        return
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        for pack_id in gone:
            chunk_count = session.scalar(select(Pack.chunk_count).where(Pack.id == pack_id))
            session.execute(delete(Chunk).where(Chunk.pack_id == pack_id))
            session.execute(delete(Pack).where(Pack.id == pack_id))
            audit.append(
                session,
                "pack.missing",
                pack_id,
                {
                    "reason": "referenced by a backup, not found in storage: dropped from the chunk index "
                    "so the next backup stores its chunks again",
                    "backup": backup_id,
                    "chunks": chunk_count,
                    "files": (files_of or {}).get(pack_id, [])[:100],
                },
                actor,
            )
    known.forget()  # a cached index of this process may still name the packs' chunks
