"""A backup's fate per secondary region where it differs from the primary's (docs/RETENTION.md section 5):
`kept` (the primary deleted it, the region's policy keeps it) or `deleted` (the region's policy dropped it)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Exists, and_, exists, or_, select
from sqlalchemy.orm import Session

from app import clock
from app.catalog.backups import USABLE_STATES
from app.catalog.models import Backup, BackupRegion, Source

KEPT, DELETED = "kept", "deleted"
_BATCH = 500


def in_region(session: Session, region: str, source: str | None = None) -> list[tuple[Backup, Source, str]]:
    """The backups the region holds or is to hold, oldest first, each with its state there: usable in the
    primary and not deleted in the region, or deleted in the primary and kept in the region (with the
    state it had before)."""
    row = BackupRegion
    mine = and_(row.backup_id == Backup.id, row.region == region)
    query = (
        select(Backup, Source, row.state, row.prior_state)
        .join(Source, Backup.source_id == Source.id)
        .outerjoin(row, mine)
        .where(
            or_(
                and_(Backup.state.in_(USABLE_STATES), or_(row.state.is_(None), row.state != DELETED)),
                and_(Backup.state == "deleted", row.state == KEPT),
            )
        )
        .order_by(Backup.started_at, Backup.id)
    )
    if source is not None:
        query = query.where(Source.name == source)
    found = []
    for backup, src, fate, prior in session.execute(query):
        state = (prior or "complete") if fate == KEPT and backup.state == "deleted" else backup.state
        found.append((backup, src, state))
    return found


def record(
    session: Session, backup_id: str, region: str, state: str, reason: str, prior_state: str | None = None
) -> None:
    row = session.get(BackupRegion, (backup_id, region))
    if row is None:
        row = BackupRegion(backup_id=backup_id, region=region)
        session.add(row)
    row.state, row.prior_state, row.reason, row.changed_at = state, prior_state, reason, clock.now()


def state_in(session: Session, backup_id: str, region: str) -> BackupRegion | None:
    return session.get(BackupRegion, (backup_id, region))


def deleted_in(session: Session, region: str, backup_ids: Sequence[str]) -> set[str]:
    """Which of `backup_ids` the region's policy deleted there."""
    found: set[str] = set()
    for start in range(0, len(backup_ids), _BATCH):
        found.update(
            session.scalars(
                select(BackupRegion.backup_id).where(
                    BackupRegion.region == region,
                    BackupRegion.state == DELETED,
                    BackupRegion.backup_id.in_(backup_ids[start : start + _BATCH]),
                )
            )
        )
    return found


def kept_only_in_regions(session: Session | Connection) -> dict[str, list[str]]:
    """Backups the primary deleted that some region keeps: id -> the regions keeping it."""
    query = (
        select(BackupRegion.backup_id, BackupRegion.region)
        .join(Backup, Backup.id == BackupRegion.backup_id)
        .where(BackupRegion.state == KEPT, Backup.state == "deleted")
        .order_by(BackupRegion.backup_id, BackupRegion.region)
    )
    kept: dict[str, list[str]] = {}
    for backup_id, region in session.execute(query):
        kept.setdefault(backup_id, []).append(region)
    return kept


def region_deleted(region: str) -> Exists:
    """A condition true for a backup row the region's policy deleted there (for discovery's query)."""
    return exists().where(
        BackupRegion.backup_id == Backup.id, BackupRegion.region == region, BackupRegion.state == DELETED
    )
