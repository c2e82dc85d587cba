"""Backup rows: creation, completion, lookup by id or by `latest`."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import clock
from app.catalog.models import Backup, Source
from app.errors import BackupNotFoundError

BACKUP_TYPES = ("full", "incremental", "differential", "archive")
#: A pg_dump of one database of a PostgreSQL source (docs/POSTGRES.md section 5): never a parent, never
#: a base for recovery, never what `latest` of a file restore means.
LOGICAL_TYPE = "logical"
#: Types that read every file, so a differential can use them as its base.
FULL_TYPES = ("full", "archive")
#: The parents a standard backup may compare against: never an archive (docs/ARCHIVE.md).
STANDARD_TYPES = ("full", "incremental", "differential")
STANDARD_FULL_TYPES = ("full",)
USABLE_STATES = ("complete", "partial")


def new_backup_id() -> str:
    return clock.now().strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def latest_backup(session: Session, source_id: int, types: Sequence[str] = BACKUP_TYPES) -> Backup | None:
    """The newest restorable backup of the source among `types`."""
    return session.scalar(
        select(Backup)
        .where(
            Backup.source_id == source_id,
            Backup.type.in_(types),
            Backup.state.in_(USABLE_STATES),
            Backup.damaged_at.is_(None),  # a damaged backup is never a parent nor `latest`
        )
        .order_by(Backup.started_at.desc(), Backup.id.desc())
        .limit(1)
    )


def list_backups(session: Session, source_id: int | None = None) -> list[tuple[Backup, str]]:
    query = select(Backup, Source.name).join(Source, Backup.source_id == Source.id)
    if source_id is not None:
        query = query.where(Backup.source_id == source_id)
    return [(b, name) for b, name in session.execute(query.order_by(Backup.started_at, Backup.id))]


def get_backup(session: Session, backup_id: str) -> Backup:
    backup = session.get(Backup, backup_id)
    if backup is None:
        raise BackupNotFoundError(
            f"no backup {backup_id!r} in the catalog", hint="list backups with `equisplit-dr backup list`"
        )
    return backup


def resolve(session: Session, selector: str, source_id: int | None) -> Backup:
    """A backup id, or `latest` of a source."""
    if selector == "latest":
        if source_id is None:
            raise BackupNotFoundError("`latest` needs a source", hint="add --source NAME")
        backup = latest_backup(session, source_id)
        if backup is None:
            raise BackupNotFoundError("the source has no restorable backup yet", hint="run a backup first")
        return backup
    return get_backup(session, selector)


def backup_stats(backup: Backup) -> dict[str, int]:
    """The counters of a backup row, named as in its manifest's `stats`."""
    return {
        "files": backup.files_total,
        "files_read": backup.files_read,
        "bytes_total": backup.bytes_total,
        "bytes_read": backup.bytes_read,
        "bytes_new": backup.bytes_new,
        "bytes_stored": backup.bytes_stored,
        "chunks": backup.chunk_count,
        "new_chunks": backup.new_chunk_count,
        "packs": backup.pack_count,
    }


def record_postgres(row: Backup, meta: dict[str, Any]) -> None:
    """The catalog columns of a PostgreSQL base backup, from its manifest's `postgres` object."""
    row.pg_start_lsn, row.pg_stop_lsn = meta["start_lsn"], meta["stop_lsn"]
    row.pg_timeline = meta["timeline"]
    row.pg_start_wal, row.pg_stop_wal = meta["start_wal"], meta["stop_wal"]
    row.pg_started_at = clock.parse_iso(meta["started_at"])
    row.pg_stopped_at = clock.parse_iso(meta["stopped_at"])
