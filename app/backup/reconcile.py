"""Reconciling what killed backups left behind (docs/BACKUP.md, "Interrupted backups").

A backup whose process died is `running` in the catalog with no one running it. If its manifest root
is durable and every pack it names is in storage, it finished in all but the catalog's word: it is
marked as its manifest says (`complete` or `partial`), audited `backup.reconciled`. Otherwise it is
`interrupted` (audited `backup.interrupted`). Backups already `interrupted` or `failed` are looked at
once for a manifest too (a process killed between the root and the catalog, later failed by the
reaper). Then the objects such backups leave are removed once older than the grace period
(BACKUP_RECONCILE_GRACE_SECONDS): their `units` objects, and files a put never finished (local storage's
`.tmp-` files), each deletion audited with its reason. Nothing of a backup whose lease still counts is
touched.

Run at the start of every backup for its own source (it holds the source's lease then) and by the
maintenance task for every source (`equisplit-dr maintenance reconcile`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select

from app import clock
from app.backup.packcheck import PackCheck, check_entries
from app.catalog import audit, jobs, locks
from app.catalog.backups import LOGICAL_TYPE, record_postgres
from app.catalog.db import transaction
from app.catalog.models import Backup, Job, Lock
from app.context import Context
from app.errors import IntegrityError, ObjectNotFoundError
from app.repo.format import Kind, tier_of
from app.storage.local import LocalStorage

log = logging.getLogger(__name__)

#: Ends the error of a backup reconcile looked at, so it is looked at once.
RECONCILED = "[reconciled]"
#: States a killed backup can be left in, or put in by the reaper or the next run.
_LEFT_STATES = ("running", "interrupted", "failed")
_BATCH = 500


@dataclass
class ReconcileReport:
    dry_run: bool
    #: backup id -> the state its manifest gave it
    completed: dict[str, str] = field(default_factory=dict)
    #: backup id -> why it is not restorable
    interrupted: dict[str, str] = field(default_factory=dict)
    deleted_units: list[str] = field(default_factory=list)
    deleted_temporaries: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def reconcile(
    ctx: Context,
    *,
    source_id: int | None = None,
    lease_held: bool = False,
    dry_run: bool = False,
    actor: str | None = None,
) -> ReconcileReport:
    """Reconcile the backups of one source (`source_id`) or of all. `lease_held`: the caller holds the
    source's lease, so no backup of it runs (logical exports keep theirs, app/logical/export.py);
    otherwise a `running` backup counts as dead only when its lease no longer counts and its job has
    not beaten for the grace period. Temporary files are swept only when reconciling all sources."""
    report = ReconcileReport(dry_run)
    now = clock.now()
    grace = timedelta(seconds=ctx.settings.backup_reconcile_grace_seconds)
    with ctx.sessions() as session:
        live = locks.live_holders(session)
        dead = {lock.holder for lock in session.scalars(select(Lock)) if locks.holder_is_dead(lock.holder)}
        query = select(Backup, Job.heartbeat_at).outerjoin(
            Job, (Job.backup_id == Backup.id) & (Job.kind == "backup")
        )
        query = query.where(
            Backup.state.in_(_LEFT_STATES),
            or_(Backup.error.is_(None), ~Backup.error.contains(RECONCILED, autoescape=True)),
        )
        if source_id is not None:
            query = query.where(Backup.source_id == source_id)
        candidates = []
        for backup, beat in session.execute(query.order_by(Backup.started_at)):
            if backup.state == "running":
                if lease_held and backup.type == LOGICAL_TYPE:
                    continue
                # Dead: its lease no longer counts, and its process is gone from this host or its
                # job has been silent for the grace period (a cluster backup's units may be queued).
                silent = now - clock.as_utc(beat or backup.started_at) >= grace
                if not lease_held and (
                    _is_live(backup.id, live) or not (silent or _is_live(backup.id, dead))
                ):
                    continue
            candidates.append((backup.id, backup.state))
    for backup_id, state in candidates:
        _settle(ctx, backup_id, state, report, dry_run=dry_run, actor=actor)
    _delete_leftover_units(ctx, source_id, now - grace, report, dry_run=dry_run, actor=actor)
    if source_id is None:
        _delete_temporaries(ctx, now - grace, report, dry_run=dry_run, actor=actor)
    return report


def _is_live(backup_id: str, live: set[str]) -> bool:
    return any(holder.endswith(f":{backup_id}") for holder in live)


def _settle(
    ctx: Context, backup_id: str, state: str, report: ReconcileReport, *, dry_run: bool, actor: str | None
) -> None:
    """Mark one dead backup as its manifest proves; else a running one interrupted, and note on any
    that it was looked at."""
    header, why = _verified_manifest(ctx, backup_id)
    if header is not None:
        report.completed[backup_id] = header["state"]
    elif state != "failed":  # a failed one stays failed, its error noting that it was looked at
        report.interrupted[backup_id] = why
    if dry_run:
        return
    with transaction(ctx.sessions) as session:
        row = session.get(Backup, backup_id)
        if row is None or row.state != state:
            return  # changed meanwhile: the next run looks again
        job = jobs.backup_job(session, backup_id)
        if header is None:
            if state == "running":
                row.state, row.finished_at = "interrupted", clock.now()
                audit.append(session, "backup.interrupted", backup_id, {"was": state, "reason": why}, actor)
            row.error = f"{row.error or 'the process running it died'}; {why} {RECONCILED}"
            if job is not None and job.state == "running":
                jobs.finish_job(session, job.id, "failed", error=row.error)
        else:
            stats = header.get("stats", {})
            row.state, row.error = header["state"], None
            row.finished_at = (
                clock.parse_iso(header["finished_at"]) if header.get("finished_at") else clock.now()
            )
            row.files_total, row.files_read = stats.get("files", 0), stats.get("files_read", 0)
            row.bytes_total, row.bytes_read = stats.get("bytes_total", 0), stats.get("bytes_read", 0)
            row.bytes_new, row.bytes_stored = stats.get("bytes_new", 0), stats.get("bytes_stored", 0)
            row.chunk_count, row.new_chunk_count = stats.get("chunks", 0), stats.get("new_chunks", 0)
            row.pack_count = stats.get("packs", 0)
            row.errors = {"errors": header.get("errors", []), "warnings": header.get("warnings", [])}
            if "postgres" in header:
                record_postgres(row, header["postgres"])
            if job is not None and job.state != "succeeded":
                jobs.finish_job(session, job.id, "succeeded", progress=stats)
            audit.append(
                session,
                "backup.reconciled",
                backup_id,
                {
                    "reason": "its process died after the manifest was written; the manifest is in "
                    "storage and every pack it names is present",
                    "was": state,
                    "state": header["state"],
                },
                actor,
            )
    if state == "running":  # its lease no longer counts (or the caller took it over): free it
        with ctx.sessions() as session:
            stale = [(lock.name, lock.holder) for lock in session.scalars(select(Lock))]
        for name, holder in stale:
            if holder.endswith(f":{backup_id}"):
                locks.release(ctx.sessions, name, holder)


def _verified_manifest(ctx: Context, backup_id: str) -> tuple[dict[str, Any] | None, str]:
    """The manifest's header if its root is in storage, reads whole, and every pack its files name is
    present; else None and why not."""
    repo = ctx.repository
    if repo.storage.stat(Kind.MANIFESTS, backup_id) is None:
        return None, "no manifest in storage"
    try:
        doc = repo.read_manifest(backup_id)
    except (IntegrityError, ObjectNotFoundError) as exc:  # damaged or gone; any other error: ask again later
        return None, f"its manifest cannot be read: {exc.message}"
    refs = check_entries(ctx, doc["entries"], PackCheck(repo.storage), tier=tier_of(doc["backup"]))
    if not refs.sound:
        path, reason = next(iter(sorted(refs.broken.items())))
        return (
            None,
            f"its manifest names what storage lacks ({len(refs.broken)} files, e.g. {path}: {reason})",
        )
    header: dict[str, Any] = doc["backup"]
    return header, ""


def _delete_leftover_units(
    ctx: Context,
    source_id: int | None,
    cutoff: datetime,
    report: ReconcileReport,
    *,
    dry_run: bool,
    actor: str | None,
) -> None:
    """Remove the `units` objects of backups that are over (or unknown to the catalog) and older than
    the grace period: one listing of the kind, whose objects belong to running backups or are garbage."""
    repo = ctx.repository
    by_backup: dict[str, list[str]] = {}
    for info in repo.storage.list(Kind.UNITS):
        by_backup.setdefault(info.name.split(".", 1)[0], []).append(info.name)
    if not by_backup:
        return
    ids = sorted(by_backup)
    with ctx.sessions() as session:
        live = locks.live_holders(session)
        rows: dict[str, Backup] = {}
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            rows.update({b.id: b for b in session.scalars(select(Backup).where(Backup.id.in_(batch)))})
    for backup_id in ids:
        row = rows.get(backup_id)
        if _is_live(backup_id, live):
            continue
        if row is None:
            started = _id_time(backup_id)
            if source_id is not None or started is None or started >= cutoff:
                continue
            reason = "left by a backup the catalog does not know, older than the grace period"
        else:
            if source_id is not None and row.source_id != source_id:
                continue
            if row.state == "running":
                continue
            ended = clock.as_utc(row.finished_at or row.started_at)
            if ended >= cutoff:
                continue
            reason = f"left by backup {backup_id} ({row.state}), over for longer than the grace period"
        _delete_objects(ctx, Kind.UNITS, by_backup[backup_id], reason, report, dry_run=dry_run, actor=actor)


def _id_time(backup_id: str) -> datetime | None:
    """The start time a backup id begins with (`YYYYMMDDTHHMMSSZ-…`)."""
    try:
        return datetime.strptime(backup_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _delete_objects(
    ctx: Context,
    kind: str,
    names: Sequence[str],
    reason: str,
    report: ReconcileReport,
    *,
    dry_run: bool,
    actor: str | None,
) -> None:
    report.deleted_units.extend(names)
    if dry_run:
        return
    for name in names:
        ctx.repository.storage.delete(kind, name)
    with transaction(ctx.sessions) as session:
        for name in names:
            audit.append(session, "object.deleted", f"{kind}/{name}", {"reason": reason}, actor)


def _delete_temporaries(
    ctx: Context, cutoff: datetime, report: ReconcileReport, *, dry_run: bool, actor: str | None
) -> None:
    """Local storage only: files of puts that never finished, older than the grace period (no put
    runs that long; a running one's file is younger)."""
    local = _local_storage(ctx.repository.storage)
    if local is None:
        return
    stale = [rel for rel, mtime in local.temporaries() if mtime < cutoff.timestamp()]
    report.deleted_temporaries.extend(stale)
    if dry_run or not stale:
        return
    for rel in stale:
        local.remove_temporary(rel)
    with transaction(ctx.sessions) as session:
        for rel in stale:
            audit.append(
                session,
                "object.deleted",
                rel,
                {"reason": "an unfinished write's temporary file, older than the grace period"},
                actor,
            )


def _local_storage(storage: object) -> LocalStorage | None:
    """The local backend under any wrappers (retry, faulty), if that is what it is."""
    while storage is not None:
        if isinstance(storage, LocalStorage):
            return storage
        storage = getattr(storage, "inner", None)
    return None
