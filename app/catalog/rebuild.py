"""Rebuild the catalog's backup rows, chunk index, backup jobs and WAL index from storage alone
(invariant 1).

What storage cannot give back (docs/ARCHITECTURE.md, "Rebuilding the catalog"): the ledger's jobs other
than each backup's own, backups that never completed (no manifest), per-unit records, the audit trail,
and the settings of a source whose manifests were written before they carried `source_options`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from app import clock
from app.catalog import chunks, jobs, sqlite_file
from app.catalog.backups import record_postgres
from app.catalog.db import migrate, sqlite_path
from app.catalog.models import Backup, Chunk, Job, Pack, Source
from app.catalog.rebuild_wal import rebuild_wal_index
from app.repo.format import TIERS, Kind
from app.repo.pack import PackEntry
from app.repo.repository import Repository
from app.storage import ObjectInfo

#: Pack indexes read at once (two ranged reads each, on threads): on S3 a rebuild's time is these round
#: trips. Memory holds at most this many indexes beside the batch being inserted.
READ_AHEAD = 8
#: Packs indexed in one batch of inserts (at most INSERT_CHUNKS chunk rows): one statement for their
#: pack rows and one per 2,000 chunk rows, not two per pack.
INSERT_PACKS = 256
INSERT_CHUNKS = 20_000

#: The id of a job re-created for a backup whose manifest names none (written before it carried one).
REBUILT_JOB_PREFIX = "j-rebuilt-"


@dataclass
class RebuildReport:
    packs: int
    chunks: int
    backups: int
    sources_created: int
    unreadable: list[str]
    jobs_created: int = 0
    wal_files: int = 0
    #: Where a damaged SQLite catalog was set aside, and what was wrong with it.
    damaged_catalog: str | None = None
    damage: str | None = None
    #: What became of the audit trail: entries brought back from storage's anchors (docs/AUDIT.md).
    audit: dict[str, Any] | None = None


@dataclass(frozen=True)
class PreparedCatalog:
    """What `prepare_catalog` did before the rebuild."""

    damaged_catalog: Path | None
    damage: str | None


def prepare_catalog(engine: Engine) -> PreparedCatalog:
    """Make the catalog fit to be rebuilt: a damaged SQLite file is set aside (renamed, never deleted)
    so a new one starts in its place, and the schema is created or migrated to the newest revision."""
    path = sqlite_path(engine)
    aside = damage = None
    if path is not None:
        damage = sqlite_file.check(path)
        if damage is not None:
            engine.dispose()
            aside = sqlite_file.set_aside(path)
    migrate(engine, check=False)
    return PreparedCatalog(aside, damage)


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return clock.as_utc(datetime.strptime(text.replace("Z", ""), "%Y-%m-%dT%H:%M:%S.%f"))


def rebuild_catalog(session: Session, repo: Repository) -> RebuildReport:
    """Replace the chunk index with what the packs' own indexes say, re-create every backup row from its
    manifest with the figures it was recorded with, give each backup without one its job back, and
    record every WAL object the catalog does not list. Sources named by manifests or WAL objects are
    created if missing. Other jobs and the audit trail are kept."""
    session.execute(delete(Chunk))
    session.execute(delete(Pack))
    unreadable: list[str] = []
    n_packs = n_chunks = 0
    # Batches by tier: a pack's index says its tier (docs/FORMAT.md section 5).
    batches: dict[str, list[tuple[str, int, Sequence[PackEntry]]]] = {tier: [] for tier in TIERS}
    rows = 0
    for info, entries, tier in pack_indexes(repo, unreadable):
        batches[tier].append((info.name, info.size, entries))
        rows += len(entries)
        if sum(map(len, batches.values())) >= INSERT_PACKS or rows >= INSERT_CHUNKS:
            n_packs, n_chunks = n_packs + _record(session, batches), n_chunks + rows
            rows = 0
    n_packs, n_chunks = n_packs + _record(session, batches), n_chunks + rows
    n_backups = created = n_jobs = 0
    for root in repo.storage.list(Kind.MANIFESTS):  # in name order (the storage contract), streamed
        backup_id = root.name
        try:
            doc = repo.read_manifest_header(backup_id)
        except Exception as exc:
            unreadable.append(f"manifest {backup_id}: {exc}")
            continue
        source = session.scalar(select(Source).where(Source.name == doc["source"]))
        if source is None:
            source = Source(
                name=doc["source"],
                kind=doc.get("source_kind", "files"),
                path=doc.get("source_path"),
                options=dict(doc.get("source_options") or {}),
                created_at=clock.now(),
            )
            session.add(source)
            session.flush()
            created += 1
        row = _backup_row(session.get(Backup, backup_id) or Backup(id=backup_id), doc, source, root.size)
        session.merge(row)
        n_backups += 1
        if jobs.backup_job(session, backup_id) is None:
            session.add(_backup_job(row, doc))
            n_jobs += 1
    n_wal, wal_sources = rebuild_wal_index(session, repo, unreadable)
    return RebuildReport(n_packs, n_chunks, n_backups, created + wal_sources, unreadable, n_jobs, n_wal)


def _record(session: Session, batches: dict[str, list[tuple[str, int, Sequence[PackEntry]]]]) -> int:
    """Index the packs of `batches` (per tier) and empty them; returns how many packs."""
    done = 0
    for tier, batch in batches.items():
        chunks.record_packs(session, batch, None, tier)
        done += len(batch)
        batch.clear()
    return done


def pack_indexes(
    repo: Repository, unreadable: list[str]
) -> Iterator[tuple[ObjectInfo, list[PackEntry], str]]:
    """Every pack's index, in listing order, READ_AHEAD of them read at once: the listing is streamed and
    memory holds READ_AHEAD indexes, whatever the repository's size. A pack whose index cannot be read
    is named in `unreadable` and skipped (a damaged pack must not stop the rebuild of the rest). Each
    comes with its tier, which its index's type says."""
    window: deque[tuple[ObjectInfo, Future[tuple[list[PackEntry], str]]]] = deque()

    def take() -> tuple[ObjectInfo, list[PackEntry], str] | None:
        info, future = window.popleft()
        try:
            return info, *future.result()
        except Exception as exc:
            unreadable.append(f"pack {info.name}: {exc}")
            return None

    with ThreadPoolExecutor(READ_AHEAD, thread_name_prefix="rebuild-read") as pool:
        for info in repo.list_packs():
            window.append((info, pool.submit(repo.read_pack_index_tier, info.name, info.size)))
            if len(window) >= READ_AHEAD and (done := take()) is not None:
                yield done
        while window:
            if (done := take()) is not None:
                yield done


def _backup_row(row: Backup, doc: dict[str, Any], source: Source, root_size: int) -> Backup:
    """The backup's row as finalize wrote it: the header's stats, plus the root's own stored size,
    which the header cannot count (docs/FORMAT.md section 6)."""
    stats = doc.get("stats", {})
    row.source_id = source.id
    row.type, row.parent_id, row.state, row.host = (
        doc["type"],
        doc.get("parent"),
        doc["state"],
        doc.get("host"),
    )
    row.started_at = _parse_time(doc["started_at"]) or clock.now()
    row.finished_at = _parse_time(doc.get("finished_at"))
    row.files_total, row.files_read = stats.get("files", 0), stats.get("files_read", 0)
    row.bytes_total, row.bytes_read = stats.get("bytes_total", 0), stats.get("bytes_read", 0)
    row.bytes_new, row.bytes_stored = stats.get("bytes_new", 0), stats.get("bytes_stored", 0) + root_size
    row.chunk_count, row.new_chunk_count = stats.get("chunks", 0), stats.get("new_chunks", 0)
    row.pack_count, row.storage_class = stats.get("packs", 0), doc.get("storage_class")
    row.errors = {"errors": doc.get("errors", []), "warnings": doc.get("warnings", [])}
    if "postgres" in doc:
        record_postgres(row, doc["postgres"])
    return row


def _backup_job(row: Backup, doc: dict[str, Any]) -> Job:
    """The backup's job as the ledger had it when the backup finished: its id, the worker's host, the
    backup's times and counters; the actor who ran it (`job.actor` of the header) in `progress`."""
    carried = doc.get("job") or {}
    progress: dict[str, Any] = {**doc.get("stats", {}), "bytes_stored": row.bytes_stored}
    if carried.get("actor"):
        progress["actor"] = carried["actor"]
    progress["rebuilt"] = True
    return Job(
        id=carried.get("id") or REBUILT_JOB_PREFIX + row.id,
        kind="backup",
        state="succeeded",
        source_id=row.source_id,
        backup_id=row.id,
        worker=row.host,
        progress=progress,
        created_at=row.started_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        heartbeat_at=row.finished_at,
    )
