"""Replication records (docs/REPLICATION.md): each object's copy per secondary region and each region's
discovery mark. Only the catalog's side: what to copy and in which order is decided in app/replication/."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, func, literal, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app import clock
from app.catalog.backup_regions import region_deleted
from app.catalog.backups import USABLE_STATES
from app.catalog.models import Backup, Pack, ReplicaObject, ReplicationRegion, Source, WalSegment

PENDING, COPIED, FAILED, MISSING = "pending", "copied", "failed", "missing"
#: The region's copy was found damaged or missing by verification: copied again, whatever its size.
DAMAGED = "damaged"
#: No kept backup of the region needs it: removed there by the region's garbage collection (docs/GC.md
#: section 5); a manifest copied later that needs it makes it pending again.
DROPPED = "dropped"
STATES = (PENDING, COPIED, FAILED, MISSING, DAMAGED)  # `dropped` is counted in a status only when present
#: States that still wait for a copy (counted in the lag).
WAITING = (PENDING, FAILED, DAMAGED)
#: Discovery re-reads this much before its mark: a row whose transaction committed late is not missed.
DISCOVERY_OVERLAP = timedelta(hours=24)
_BATCH = 1000
#: Rows discovery reads per query.
PAGE = 1000


@dataclass(frozen=True)
class Candidate:
    """An object of the primary the region has no row for yet."""

    kind: str
    name: str
    size: int | None
    source_at: datetime


@dataclass
class RegionSummary:
    region: str
    objects: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    oldest_waiting: datetime | None = None
    last_pass_at: datetime | None = None
    last_error: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: Objects waiting for a reason other than their turn (frozen in the primary: "thawing in the primary").
    waiting: list[dict[str, Any]] = field(default_factory=list)


def region_row(session: Session, region: str) -> ReplicationRegion:
    row = session.get(ReplicationRegion, region)
    if row is None:
        row = ReplicationRegion(region=region)
        session.add(row)
        session.flush()
    return row


def _since(session: Session, region: str) -> datetime | None:
    row = session.get(ReplicationRegion, region)
    if row is None or row.discovered_through is None:
        return None
    return clock.as_utc(row.discovered_through) - DISCOVERY_OVERLAP


def _absent(region: str, kind: str, name: Any) -> Any:
    return (
        ~select(ReplicaObject.name)
        .where(ReplicaObject.region == region, ReplicaObject.kind == kind, ReplicaObject.name == name)
        .exists()
    )


def _queries(session: Session, region: str) -> list[tuple[str, Any, tuple[Any, ...]]]:
    """Per kind, the query of objects new since the region's mark that it has no row for, and the
    columns that order it oldest first (time, then a unique key): rows of (name, size, time, *order)."""
    since = _since(session, region)
    pack_order = (Pack.created_at, Pack.id)
    packs = select(Pack.id, Pack.size, Pack.created_at, *pack_order).where(_absent(region, "packs", Pack.id))
    if since is not None:
        packs = packs.where(Pack.created_at >= since)
    wal_name = Source.name + "-" + WalSegment.name
    wal_order = (WalSegment.archived_at, WalSegment.source_id, WalSegment.name)
    wal = (
        select(wal_name, WalSegment.stored_size, WalSegment.archived_at, *wal_order)
        .join(Source, Source.id == WalSegment.source_id)
        .where(_absent(region, "wal", wal_name))
    )
    if since is not None:
        wal = wal.where(WalSegment.archived_at >= since)
    manifest_order = (Backup.finished_at, Backup.id)
    manifests = select(Backup.id, literal(None, BigInteger), Backup.finished_at, *manifest_order).where(
        Backup.state.in_(USABLE_STATES),
        Backup.finished_at.is_not(None),
        _absent(region, "manifests", Backup.id),
        ~region_deleted(region),  # the region's own retention dropped it: never copied again
    )
    if since is not None:
        manifests = manifests.where(Backup.finished_at >= since)
    return [("packs", packs, pack_order), ("wal", wal, wal_order), ("manifests", manifests, manifest_order)]


def candidates(session: Session, region: str) -> Iterator[Candidate]:
    """Packs, WAL files and manifests new since the region's discovery mark that it has no row for, read
    a page at a time (keyset on time and key), so memory stays bounded however many there are."""
    for kind, query, order in _queries(session, region):
        last: tuple[Any, ...] | None = None
        while True:
            page = query if last is None else query.where(tuple_(*order) > tuple_(*last))
            rows = session.execute(page.order_by(*order).limit(PAGE)).all()
            for row in rows:
                yield Candidate(kind, row[0], row[1], clock.as_utc(row[2]))
            if len(rows) < PAGE:
                break
            last = tuple(rows[-1][3:])


def oldest_undiscovered(session: Session, region: str) -> datetime | None:
    """The time of the oldest object discovery has not recorded yet (one row per kind is read)."""
    times = []
    for _, query, order in _queries(session, region):
        first = session.execute(query.order_by(*order).limit(1)).first()
        if first is not None:
            times.append(clock.as_utc(first[2]))
    return min(times) if times else None


def add_pending(session: Session, region: str, items: Iterable[Candidate]) -> int:
    """Rows `pending` for objects the region has none for; an existing row is left as it is."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    added = 0
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal added
        if batch:
            stmt = dialect.insert(ReplicaObject).values(batch).on_conflict_do_nothing()
            added += len(session.execute(stmt.returning(ReplicaObject.name)).all())
            batch.clear()

    for item in items:
        batch.append(
            {
                "region": region,
                "kind": item.kind,
                "name": item.name,
                "size": item.size,
                "state": PENDING,
                "source_at": item.source_at,
                "attempts": 0,
            }
        )
        if len(batch) >= _BATCH:
            flush()
    flush()
    return added


def discover(session: Session, region: str) -> int:
    """Record every new object as pending for the region, then move its mark to now."""
    now = clock.now()
    row = region_row(session, region)
    added = add_pending(session, region, candidates(session, region))
    row.discovered_through = now
    return added


def waiting(
    session: Session, region: str, kind: str, after: str = "", limit: int = 256
) -> list[ReplicaObject]:
    """The next `limit` rows of `kind` still waiting for a copy to the region, in name order after `after`."""
    query = (
        select(ReplicaObject)
        .where(
            ReplicaObject.region == region,
            ReplicaObject.kind == kind,
            ReplicaObject.state.in_(WAITING),
            ReplicaObject.name > after,
        )
        .order_by(ReplicaObject.name)
        .limit(limit)
    )
    rows = list(session.scalars(query))
    for row in rows:
        session.expunge(row)
    return rows


def states(session: Session, region: str, kind: str, names: Sequence[str]) -> dict[str, str]:
    """The state of each named object in the region (absent names have no row)."""
    found: dict[str, str] = {}
    for start in range(0, len(names), _BATCH):
        chunk = names[start : start + _BATCH]
        query = select(ReplicaObject.name, ReplicaObject.state).where(
            ReplicaObject.region == region, ReplicaObject.kind == kind, ReplicaObject.name.in_(chunk)
        )
        found.update({name: state for name, state in session.execute(query)})
    return found


def wal_waiting_before(session: Session, region: str, source: str, before: datetime) -> int:
    """WAL files of `source` archived before `before` that still wait for a copy to the region."""
    query = select(func.count()).where(
        ReplicaObject.region == region,
        ReplicaObject.kind == "wal",
        ReplicaObject.state.in_(WAITING),
        ReplicaObject.name.startswith(source + "-", autoescape=True),
        ReplicaObject.source_at <= before,
    )
    return int(session.scalar(query) or 0)


def mark(
    session: Session,
    region: str,
    kind: str,
    name: str,
    state: str,
    *,
    size: int | None = None,
    error: str | None = None,
    source_at: datetime | None = None,
) -> None:
    """Record an attempt's outcome (creating the row if needed: the keyring and config have none at first)."""
    now = clock.now()
    row = session.get(ReplicaObject, (region, kind, name))
    if row is None:
        row = ReplicaObject(
            region=region, kind=kind, name=name, state=PENDING, source_at=source_at or now, attempts=0
        )
        session.add(row)
    row.state = state
    row.attempts = (row.attempts or 0) + 1
    if size is not None:
        row.size = size
    if state == COPIED:
        row.copied_at = now
        row.error = None
    else:
        row.error = error


def requeue(session: Session, region: str, kind: str, names: Iterable[str]) -> int:
    """Mark the region's copies `damaged` (found damaged or missing): the next pass copies them again."""
    wanted = list(dict.fromkeys(names))
    changed = 0
    for start in range(0, len(wanted), _BATCH):
        result = session.execute(
            update(ReplicaObject)
            .where(
                ReplicaObject.region == region,
                ReplicaObject.kind == kind,
                ReplicaObject.name.in_(wanted[start : start + _BATCH]),
            )
            .values(state=DAMAGED, error="the region's copy was found damaged or missing by verification")
        )
        changed += result.rowcount or 0  # type: ignore[attr-defined]
    return changed


def revive(session: Session, region: str, kind: str, names: Sequence[str]) -> None:
    """Make objects the region's garbage collection dropped pending again (a manifest copied now needs them)."""
    for start in range(0, len(names), _BATCH):
        session.execute(
            update(ReplicaObject)
            .where(
                ReplicaObject.region == region,
                ReplicaObject.kind == kind,
                ReplicaObject.state == DROPPED,
                ReplicaObject.name.in_(names[start : start + _BATCH]),
            )
            .values(state=PENDING, error=None, source_at=clock.now())
        )


def copied_manifests(session: Session, region: str) -> list[str]:
    """Backups whose copy is complete in the region (their manifest is there)."""
    query = select(ReplicaObject.name).where(
        ReplicaObject.region == region, ReplicaObject.kind == "manifests", ReplicaObject.state == COPIED
    )
    return list(session.scalars(query))


def summary(session: Session, region: str) -> RegionSummary:
    """Objects and bytes per state, the oldest object still waiting (or not yet discovered), the last pass."""
    result = RegionSummary(region)
    query = (
        select(ReplicaObject.state, func.count(), func.coalesce(func.sum(ReplicaObject.size), 0))
        .where(ReplicaObject.region == region)
        .group_by(ReplicaObject.state)
    )
    for state, count, size in session.execute(query):
        result.objects[state] = int(count)
        result.bytes[state] = int(size or 0)
    oldest = session.scalar(
        select(func.min(ReplicaObject.source_at)).where(
            ReplicaObject.region == region, ReplicaObject.state.in_(WAITING)
        )
    )
    times = [clock.as_utc(oldest)] if oldest is not None else []
    undiscovered = oldest_undiscovered(session, region)
    if undiscovered is not None:
        times.append(undiscovered)
    result.oldest_waiting = min(times) if times else None
    failed = session.execute(
        select(ReplicaObject.kind, ReplicaObject.name, ReplicaObject.attempts, ReplicaObject.error)
        .where(ReplicaObject.region == region, ReplicaObject.state.in_((FAILED, MISSING, DAMAGED)))
        .order_by(ReplicaObject.source_at)
        .limit(10)
    )
    result.errors = [{"object": f"{k}/{n}", "attempts": a, "error": e} for k, n, a, e in failed]
    held = session.execute(
        select(ReplicaObject.kind, ReplicaObject.name, ReplicaObject.source_at, ReplicaObject.error)
        .where(
            ReplicaObject.region == region, ReplicaObject.state == PENDING, ReplicaObject.error.is_not(None)
        )
        .order_by(ReplicaObject.source_at)
        .limit(10)
    )
    result.waiting = [
        {"object": f"{k}/{n}", "since": clock.iso(clock.as_utc(at)), "reason": e} for k, n, at, e in held
    ]
    row = session.get(ReplicationRegion, region)
    if row is not None:
        result.last_pass_at = clock.as_utc(row.last_pass_at) if row.last_pass_at else None
        result.last_error = row.last_error
    return result


def record_pass(session: Session, region: str, error: str | None) -> None:
    row = region_row(session, region)
    row.last_pass_at = clock.now()
    row.last_error = error


def regions_with_rows(session: Session) -> list[str]:
    return list(session.scalars(select(ReplicationRegion.region).order_by(ReplicationRegion.region)))
