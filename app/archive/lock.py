"""S3 Object Lock for archives (docs/ARCHIVE.md, "Object Lock"): an archive's cold packs and its manifest
root are written in compliance mode, retained until the backup's start plus the archive years, so no
one (the root account included) can delete or overwrite them before retention would."""

from __future__ import annotations

from datetime import datetime

from app import clock
from app.repo.format import Kind
from app.settings import Settings
from app.storage.base import Storage

MODE = "COMPLIANCE"


def retain_until(settings: Settings, started: datetime, *, archive: bool, storage_locks: bool) -> datetime | None:
    """Until when an archive started at `started` is locked: None unless it is an archive, the storage
    has object lock (S3) and BACKUP_ARCHIVE_OBJECT_LOCK is on."""
    if not (archive and storage_locks and settings.backup_archive_object_lock):
        return None
    return add_years(started, settings.backup_retention_archive_years)


def add_years(when: datetime, years: int) -> datetime:
    """`when` plus `years` calendar years (29 February becomes 1 March in a common year)."""
    try:
        return when.replace(year=when.year + years)
    except ValueError:
        return when.replace(year=when.year + years, month=3, day=1)


def is_locked(until: datetime | None) -> bool:
    """Whether storage still refuses to delete an object retained until `until`."""
    return until is not None and clock.as_utc(until) > clock.now()


def locked_archives(storage: Storage, backup_ids: list[str]) -> dict[str, datetime]:
    """backup id -> retain-until, for the backups of `backup_ids` whose manifest root storage still
    locks (one stat each; a backend without object lock answers none)."""
    if not storage.capabilities.storage_classes or not backup_ids:
        return {}
    found: dict[str, datetime] = {}
    for backup_id in backup_ids:
        info = storage.stat(Kind.MANIFESTS, backup_id)
        if info is not None and info.retain_until is not None and is_locked(info.retain_until):
            found[backup_id] = info.retain_until
    return found
