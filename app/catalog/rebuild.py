"""Rebuild the catalog's backup rows and chunk index from storage alone (invariant 1)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app import clock
from app.catalog import chunks
from app.catalog.backups import record_postgres
from app.catalog.models import Backup, Chunk, Pack, Source
from app.repo.repository import Repository


@dataclass
class RebuildReport:
    packs: int
    chunks: int
    backups: int
    sources_created: int
    unreadable: list[str]


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return clock.as_utc(datetime.strptime(text.replace("Z", ""), "%Y-%m-%dT%H:%M:%S.%f"))


def rebuild_catalog(session: Session, repo: Repository) -> RebuildReport:
    """Replace the chunk index with what the packs' own indexes say, and re-create every backup row
    from its manifest. Sources named by manifests are created if missing. Jobs and audit are kept."""
    session.execute(delete(Chunk))
    session.execute(delete(Pack))
    unreadable: list[str] = []
    n_packs = n_chunks = 0
    for info in repo.list_packs():
        try:
            entries = repo.read_pack_index(info.name, info.size)
        except Exception as exc:  # a damaged pack must not stop the rebuild of the rest
            unreadable.append(f"pack {info.name}: {exc}")
            continue
        chunks.record_pack(session, info.name, info.size, entries, None)
        n_packs += 1
        n_chunks += len(entries)
    n_backups = created = 0
    for backup_id in repo.list_manifests():
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
                options={},
                created_at=clock.now(),
            )
            session.add(source)
            session.flush()
            created += 1
        stats = doc.get("stats", {})
        row = session.get(Backup, backup_id) or Backup(id=backup_id)
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
        row.bytes_new, row.bytes_stored = stats.get("bytes_new", 0), stats.get("bytes_stored", 0)
        row.chunk_count, row.new_chunk_count = stats.get("chunks", 0), stats.get("new_chunks", 0)
        row.pack_count, row.storage_class = stats.get("packs", 0), doc.get("storage_class")
        row.errors = {"errors": doc.get("errors", []), "warnings": doc.get("warnings", [])}
        if "postgres" in doc:
            record_postgres(row, doc["postgres"])
        session.merge(row)
        n_backups += 1
    return RebuildReport(n_packs, n_chunks, n_backups, created, unreadable)
