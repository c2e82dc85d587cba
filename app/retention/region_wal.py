"""WAL thinning per secondary region (docs/RETENTION.md section 5): the region's own policy over the base
backups it keeps decides which WAL files it still needs, read from its replica rows (the WAL it holds or
is to hold); the rest is removed there, rows first (state `dropped`), one audit entry per batch."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import clock
from app.catalog import audit, replicas
from app.catalog.db import transaction
from app.catalog.models import Backup, ReplicaObject, Source
from app.context import Context
from app.errors import EquisplitError, WalError
from app.repo.format import Kind
from app.retention.policy import RetentionPolicy
from app.retention.verdicts import WalVerdict
from app.retention.wal_window import wal_bounds
from app.settings import region_url
from app.storage import open_storage
from app.wal import names

_BATCH = 500
#: Replica states of WAL the region holds or is to hold.
_HELD = (replicas.COPIED, replicas.PENDING, replicas.FAILED, replicas.DAMAGED)


class RegionWal(WalVerdict):
    """One PostgreSQL source's WAL that the region's kept base backups and window do not need; `names`
    are object names in the region (`source-walname`)."""


def plan_region_wal(
    session: Session,
    region: str,
    kept: Sequence[tuple[Backup, Source]],
    policy: RetentionPolicy,
    now: datetime,
) -> list[RegionWal]:
    """Per PostgreSQL source with a base backup the region keeps: its WAL archived before the window's
    base backup started, outside every kept base backup's own range (history and backup-label files
    are always kept; a source with no kept base backup keeps all its WAL)."""
    found = []
    sources = {s.id: s for _, s in kept if s.kind == "postgres"}
    for source in sources.values():
        bounds = wal_bounds([b for b, s in kept if s.id == source.id], policy, now)
        if bounds is None:
            continue
        kept_from, ranges = bounds
        thinning = RegionWal(source.name, kept_from=kept_from)
        query = (
            select(ReplicaObject.name, ReplicaObject.size)
            .where(
                ReplicaObject.region == region,
                ReplicaObject.kind == Kind.WAL,
                ReplicaObject.name.startswith(source.name + "-", autoescape=True),
                ReplicaObject.state.in_(_HELD),
                ReplicaObject.source_at < kept_from,
            )
            .order_by(ReplicaObject.name)
        )
        for name, size in session.execute(query):
            split = names.split_object_name(name)
            if split is None or split[0] != source.name:
                continue  # another source whose name starts like this one
            try:
                wal = names.parse(split[1])
            except WalError:
                continue
            if wal.kind not in (names.SEGMENT, names.PARTIAL):
                continue
            segment = split[1][:24]
            if any(t == wal.timeline and start <= segment <= stop for t, start, stop in ranges):
                continue  # it makes a kept base backup consistent
            thinning.names.append(name)
            thinning.bytes += size or 0
        if thinning.names:
            found.append(thinning)
    return found


def thin_region_wal(
    ctx: Context, region: str, thinning: RegionWal, actor: str | None
) -> tuple[int, list[str]]:
    """Rows `dropped` and one audit entry per batch, then the objects in the region; (deleted, problems)."""
    deleted = 0
    problems: list[str] = []
    storage = open_storage(region_url(ctx.settings, region))
    try:
        for start in range(0, len(thinning.names), _BATCH):
            batch = thinning.names[start : start + _BATCH]
            with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
                session.execute(
                    update(ReplicaObject)
                    .where(
                        ReplicaObject.region == region,
                        ReplicaObject.kind == Kind.WAL,
                        ReplicaObject.name.in_(batch),
                    )
                    .values(state=replicas.DROPPED, error=None)
                )
                audit.append(
                    session,
                    "wal.deleted",
                    thinning.source,
                    {
                        "region": region,
                        "reason": f"outside region {region}'s point-in-time recovery window and needed by no "
                        "base backup kept there",
                        "count": len(batch),
                        "first": batch[0],
                        "last": batch[-1],
                        "all_kept_from": clock.iso(thinning.kept_from),
                    },
                    actor,
                )

            def one(name: str) -> str | None:
                try:
                    storage.delete(Kind.WAL, name)
                except EquisplitError as exc:
                    return f"region {region}: wal/{name} not deleted: {exc.message}"
                return None

            with ThreadPoolExecutor(max_workers=8) as pool:
                problems.extend(p for p in pool.map(one, batch) if p)
            deleted += len(batch)
    finally:
        storage.close()
    return deleted, problems
