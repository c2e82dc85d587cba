"""Rebuild the WAL index (docs/WAL.md section 7) from the WAL objects alone: each object is opened and
checked (its meta lies inside the envelope), then recorded as a push records it."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import clock
from app.catalog import wal as catalog_wal
from app.catalog.models import Source
from app.repo.crypto import envelope_key_id
from app.repo.format import Kind
from app.repo.repository import Repository
from app.wal import names, segment


def rebuild_wal_index(session: Session, repo: Repository, unreadable: list[str]) -> tuple[int, int]:
    """Record every WAL object the catalog does not list; (WAL files recorded, sources created). An
    object that cannot be read is named in `unreadable` and skipped. Cost: every new object is read."""
    sources: dict[str, int] = {}
    recorded = created = 0
    for info in repo.storage.list(Kind.WAL):
        parsed = names.split_object_name(info.name)
        if parsed is None:
            unreadable.append(f"wal {info.name}: not the name of a WAL object")
            continue
        source_name, wal_name = parsed
        if source_name not in sources:
            source = session.scalar(select(Source).where(Source.name == source_name))
            if source is None:  # a cluster that archived WAL but has no backup in storage
                source = Source(
                    name=source_name, kind="postgres", path=None, options={}, created_at=clock.now()
                )
                session.add(source)
                session.flush()
                created += 1
            sources[source_name] = source.id
        source_id = sources[source_name]
        if catalog_wal.get_segment(session, source_id, wal_name) is not None:
            continue
        try:
            sealed = repo.storage.get(Kind.WAL, info.name)
            meta, _ = segment.open_object(repo, source_name, wal_name, sealed)
        except Exception as exc:  # a damaged object must not stop the rebuild of the rest
            unreadable.append(f"wal {info.name}: {exc}")
            continue
        name = names.parse(wal_name)
        record = catalog_wal.WalRecord(
            name=wal_name,
            kind=meta.kind,
            timeline=name.timeline,
            segno=name.segno(meta.segment_size) if meta.segment_size else None,
            size=meta.size,
            stored_size=len(sealed),
            content_hash=meta.hash,
            key_id=envelope_key_id(sealed).hex(),
            written_at=clock.parse_iso(meta.written_at) if meta.written_at else None,
            archived_at=clock.parse_iso(meta.archived_at),
            system_identifier=meta.system_identifier,
            segment_size=meta.segment_size,
        )
        catalog_wal.record_segment(session, source_id, record)
        recorded += 1
    return recorded, created
