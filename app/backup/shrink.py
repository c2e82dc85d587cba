"""Noticing a source that shrank since its last complete backup: an unmounted disk or a deleted share
walks as an empty tree, and a backup of it must not pass for a good one (docs/BACKUP.md)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.catalog.backups import LOGICAL_TYPE
from app.catalog.models import Backup

SHRUNK = "shrunk"
SHRINK_ALLOWED = "shrink_allowed"


def last_complete(session: Session, source_id: int, backup_id: str) -> Backup | None:
    """The source's newest `complete` backup of its tree other than `backup_id` (logical exports aside)."""
    return session.scalar(
        select(Backup)
        .where(
            Backup.source_id == source_id,
            Backup.state == "complete",
            Backup.type != LOGICAL_TYPE,
            Backup.id != backup_id,
        )
        .order_by(Backup.started_at.desc(), Backup.id.desc())
        .limit(1)
    )


def _shrank(before: int, now: int, percent: int) -> bool:
    return before > 0 and (now == 0 or (before - now) * 100 > before * percent)


def shrink_warning(
    previous: Backup | None, files: int, size: int, percent: int, *, allowed: bool
) -> dict[str, str] | None:
    """A warning when the file count or the bytes fell by more than `percent` per cent (or to nothing)
    since `previous`; code SHRUNK (the backup is partial), or SHRINK_ALLOWED when the user confirmed."""
    if previous is None:
        return None
    before_files, before_bytes = previous.files_total or 0, previous.bytes_total or 0
    if not (_shrank(before_files, files, percent) or _shrank(before_bytes, size, percent)):
        return None
    what = (
        f"the source shrank since backup {previous.id}: {files} files, {size} bytes now against "
        f"{before_files} files, {before_bytes} bytes (more than BACKUP_SHRINK_WARN_PERCENT={percent}% less)"
    )
    if allowed:
        return {"path": ".", "warning": what + "; confirmed with --allow-shrink", "code": SHRINK_ALLOWED}
    return {
        "path": ".",
        "warning": what + "; is a disk unmounted or a share gone? If the shrink is intended, "
        "run the backup with --allow-shrink (Python: allow_shrink=True)",
        "code": SHRUNK,
    }
