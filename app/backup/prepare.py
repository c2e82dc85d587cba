"""Step 1 of a backup: take the source's lease, record the backup and its job, walk the tree, decide
what to read, and split it into units (docs/BACKUP.md)."""

from __future__ import annotations

import contextlib
import gc
import socket
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from app import clock
from app.archive import lock
from app.backup import objects
from app.backup.hooks import SourceHooks, hooks_for, load_source
from app.backup.packcheck import Located, locate_packs
from app.backup.plan import Parent, Unit, plan_reads, split_units, unit_bytes_for
from app.backup.reconcile import reconcile
from app.catalog import jobs, locks
from app.catalog.backups import (
    BACKUP_TYPES,
    FULL_TYPES,
    STANDARD_FULL_TYPES,
    STANDARD_TYPES,
    latest_backup,
    new_backup_id,
)
from app.catalog.db import transaction
from app.catalog.models import Backup, BackupUnit, Job
from app.context import Context
from app.errors import ConfigurationError
from app.repo.format import Tier
from app.sources.watch import SizeWatch

#: Lease of a backup run in one process (renewed by a heartbeat) and of one spread over a cluster
#: (renewed by every unit as it starts and while it runs).
LOCAL_LEASE = timedelta(minutes=2)
CLUSTER_LEASE = timedelta(minutes=30)
#: Unit inputs stored at once while planning.
INPUT_WRITERS = 4


@dataclass
class PreparedBackup:
    backup_id: str
    job_id: str
    source: str
    type: str
    requested_type: str
    units: list[int]
    lease: str
    holder: str
    queue: str
    storage_class: str | None
    bytes_to_read: int
    unit_sizes: list[int] = field(default_factory=list)
    files_to_read: int = 0
    plan: dict[str, Any] | None = None
    #: The tier of the packs it writes and dedups against (docs/ARCHIVE.md): cold for an archive.
    tier: str = Tier.STANDARD
    #: Object Lock of its cold packs and root (docs/ARCHIVE.md), ISO time; None: not locked.
    retain_until: str | None = None
    #: Each unit's input, by number, when they are kept in memory (`keep_plan` on remote storage).
    inputs: dict[int, dict[str, Any]] | None = None
    #: Where the index puts the parent's chunks, looked up on a thread while the walk runs (`keep_plan`
    #: with a parent): finalize's pack check takes it for an unchanged tree (app/backup/packcheck.py).
    locating: Future[Located] | None = None


#: A source's lease in the catalog's `locks` table is named LEASE_PREFIX + the source's name.
LEASE_PREFIX = "source:"


def lease_name(source: str) -> str:
    return f"{LEASE_PREFIX}{source}"


def _parent_for(ctx: Context, source_id: int, backup_type: str) -> tuple[str, Backup | None]:
    """The parent a backup compares against; incremental/differential without a full become full."""
    if backup_type in FULL_TYPES:
        return backup_type, None
    with ctx.sessions() as session:
        # Never an archive: its chunks are cold copies, which a standard backup must not reference.
        types = STANDARD_FULL_TYPES if backup_type == "differential" else STANDARD_TYPES
        parent = latest_backup(session, source_id, types)
    return (backup_type, parent) if parent is not None else ("full", None)


def _parent_of(ctx: Context, parent: Backup | None) -> Parent | None:
    if parent is None:
        return None
    manifest = ctx.repository.read_manifest(parent.id, cached=True)  # root from storage, entries cached
    started = clock.as_utc(parent.started_at).timestamp()
    files = {d["path"]: d for d in manifest["entries"] if d["type"] == "file"}
    return Parent(files, int(started * 1_000_000_000))


def _locate_on_a_thread(ctx: Context, parent: Parent, tier: str) -> Future[Located]:
    """Look the parent's chunks up in the index on a thread of its own: SQLite runs the lookups outside
    the interpreter's lock, so on a second core they cost the walk nothing (0.1 CPU s of an unchanged
    re-backup of the 1 GB bench tree)."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="locate-parent")
    try:
        return pool.submit(locate_packs, ctx, (c for e in parent.files.values() for c in e["chunks"]), tier)
    finally:
        pool.shutdown(wait=False)


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: for steps that build many objects that all stay alive (a
    parent manifest's entries, a walk's), which each young collection would traverse for nothing
    (about ten of them, 0.05-0.08 CPU s of an unchanged re-backup of the 1 GB bench tree). What those
    steps leave as cyclic garbage is collected after."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _reconcile_source(ctx: Context, source_id: int) -> None:
    """Backups the source left behind: we hold its lease, so none of them is running now. One whose
    manifest is in storage and whole is marked as it says, the others `interrupted`; their leftover
    objects go after the grace period (app/backup/reconcile.py). Logical exports hold a lease of
    their own (app/logical/export.py) and are left alone."""
    reconcile(ctx, source_id=source_id, lease_held=True)


def prepare_backup(
    ctx: Context,
    source_name: str,
    backup_type: str,
    *,
    cluster: bool = False,
    task_id: str | None = None,
    hooks: SourceHooks | None = None,
    checksum: bool = False,
    parallelism: int = 1,
    watch: SizeWatch | None = None,
    keep_plan: bool = False,
    allow_shrink: bool = False,
) -> PreparedBackup:
    """Plan a backup. Raises LockedError when the source is being backed up already.

    `hooks` walk the source and bracket the backup (app/backup/hooks.py); by default those of the
    source's kind. `checksum` re-reads every file whatever the change rule says (the parent is still
    recorded, and chunks already stored are not stored again). `parallelism` is how many processes
    will read the units: units are made small enough to keep them all busy; `watch` counts the bytes
    the walk finds; one that never fires means one process after all. `keep_plan`: the plan stays in
    memory (one machine: handed to `finalize_backup`) instead of going through storage (a cluster),
    and on remote storage the units' inputs too (`PreparedBackup.inputs`, handed to the units, whose
    results come back in memory). `allow_shrink`:
    the user confirmed that the source may have shrunk since its last complete backup (app/backup/shrink.py)."""
    if backup_type not in BACKUP_TYPES:
        raise ConfigurationError(
            f"unknown backup type {backup_type!r}",
            hint="use full, incremental, differential or archive (a logical export of one PostgreSQL "
            "database: `equisplit-dr pg export`)",
        )
    repo = ctx.repository  # opens the keys first: a wrong key stops here, before anything is written
    source = load_source(ctx, source_name)
    if hooks is None:
        if source.kind == "postgres" and cluster:
            raise ConfigurationError(
                f"source {source_name} is a PostgreSQL cluster: its backup holds one session from start "
                "to end, so it runs in one process (app.backup.engine.run_backup), not as a chord",
            )
        hooks = hooks_for(source)
    source_id = source.id
    queue = str(source.options.get("queue", "chunks"))
    backup_id = new_backup_id()
    lease = lease_name(source_name)
    # One process: the holder names it, so a crash frees the lease at once. A cluster: any worker may
    # finish the backup, so only expiry frees it.
    holder = f"cluster:{backup_id}" if cluster else f"{locks.new_holder()}:{backup_id}"
    locks.acquire(ctx.sessions, lease, holder, CLUSTER_LEASE if cluster else LOCAL_LEASE)
    try:
        _reconcile_source(ctx, source_id)
        actual_type, parent = _parent_for(ctx, source_id, backup_type)
        started = clock.now()
        storage_class = (
            ctx.settings.backup_archive_storage_class
            if actual_type == "archive" and repo.storage.capabilities.storage_classes
            else None
        )
        tier = Tier.COLD if actual_type == "archive" else Tier.STANDARD
        locked = lock.retain_until(
            ctx.settings,
            started,
            archive=actual_type == "archive",
            storage_locks=repo.storage.capabilities.storage_classes,
        )
        retain_until = clock.iso(locked)
        with transaction(ctx.sessions) as session:
            session.add(
                Backup(
                    id=backup_id,
                    source_id=source_id,
                    type=actual_type,
                    parent_id=parent.id if parent else None,
                    state="running",
                    host=socket.gethostname(),
                    started_at=started,
                    storage_class=storage_class,
                    errors={},
                )
            )
            job = jobs.start_job(session, "backup", source_id=source_id, backup_id=backup_id)
            job.task_id, job.queue = task_id, "backup"
            job_id = job.id
        locating: Future[Located] | None = None
        # The parent's entries, the walk's, the units' items and their inputs: objects that all live
        # on, or die by reference count (a collection as soon as it is back traversed the walk's 40,000
        # entries, once more at each older generation: ~0.05 s of the 1 GB bench tree's plan, serial in
        # a cluster).
        with collection_paused():
            previous = None if checksum else _parent_of(ctx, parent)
            if previous is not None and keep_plan:
                locating = _locate_on_a_thread(ctx, previous, tier)
            if watch is not None and previous is not None:
                watch.counts = previous.needs_reading  # what an unchanged tree costs is the walk alone
            hooks.begin(ctx, backup_id)
            walk = hooks.walk(ctx, watch, previous.reusable if previous is not None else None)
            root = walk.root
            to_read, reused = plan_reads(walk.entries, previous)
            unit_bytes = unit_bytes_for(
                ctx.settings.backup_unit_bytes, sum(e.size for e in to_read), parallelism
            )
            units = split_units(to_read, unit_bytes, guided=cluster)
            unit_paths = {e.path for e in to_read}
            warnings = list(walk.warnings)
            if actual_type != backup_type:
                warnings.append(
                    {"path": ".", "warning": f"no base backup for {backup_type}: ran a full backup"}
                )

            def input_of(unit: Unit) -> dict[str, Any]:
                return {
                    "root": str(root),
                    "storage_class": storage_class,
                    "tier": tier,
                    "retain_until": retain_until,
                    "read": walk.read,
                    "entries": [item.to_json() for item in unit.items],
                }

            # On remote storage (S3: a PUT, a GET and a DELETE each) a one-machine backup keeps its units'
            # inputs in memory and sends each with its unit; otherwise they are stored, on threads while
            # the next is encoded: each is a round trip on the serial stretch before any unit can start.
            in_memory = keep_plan and repo.storage.capabilities.remote
            inputs = {unit.number: input_of(unit) for unit in units} if in_memory else None
            with ThreadPoolExecutor(INPUT_WRITERS, thread_name_prefix="unit-input") as pool:
                written = [
                    pool.submit(
                        objects.write, repo, objects.input_name(backup_id, unit.number), input_of(unit)
                    )
                    for unit in (units if inputs is None else [])
                ]
                for done in written:
                    done.result()
            plan_doc = {
                "backup_id": backup_id,
                "source": source_name,
                "source_kind": walk.kind,
                "root": str(root),
                "type": actual_type,
                "parent": parent.id if parent else None,
                "started_at": clock.iso(started),
                "storage_class": storage_class,
                "tier": tier,
                "retain_until": retain_until,
                "units": len(units),
                "files_reused": reused,
                "checksum": checksum,
                "allow_shrink": allow_shrink,
                "extra": walk.has_extra,
                "entries": [e.to_json() for e in walk.entries if e.path not in unit_paths],
                "errors": walk.errors,
                "warnings": warnings,
            }
        if not keep_plan:
            objects.write(repo, objects.plan_name(backup_id), plan_doc)
        with transaction(ctx.sessions) as session:
            for unit in units:
                session.add(
                    BackupUnit(
                        backup_id=backup_id,
                        number=unit.number,
                        state="pending",
                        files=len(unit.items),
                        bytes=unit.bytes,
                        attempts=0,
                    )
                )
            job_row = session.get(Job, job_id)
            if job_row is not None:
                job_row.progress = {
                    "units": len(units),
                    "units_done": 0,
                    "bytes_total": sum(u.bytes for u in units),
                    "bytes_done": 0,
                    "files_total": len(to_read),
                }
    except BaseException as exc:
        from app.backup.finalize import fail_backup

        if "job_id" in locals():
            fail_backup(ctx, backup_id, exc)
        else:
            locks.release(ctx.sessions, lease, holder)
        raise
    return PreparedBackup(
        backup_id,
        job_id,
        source_name,
        actual_type,
        backup_type,
        [u.number for u in units],
        lease,
        holder,
        queue,
        storage_class,
        sum(u.bytes for u in units),
        [u.bytes for u in units],
        len(to_read),
        plan_doc if keep_plan else None,
        tier=tier,
        retain_until=retain_until,
        inputs=inputs,
        locating=locating,
    )
