"""One backup of a file tree, end to end: lock, plan, read in parallel, manifest, catalog, audit."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from app import clock
from app.backup.plan import plan_reads, split_units
from app.backup.reader import read_file
from app.backup.writer import ChunkWriter
from app.catalog import audit, chunks, jobs, locks
from app.catalog.backups import FULL_TYPES, latest_backup, new_backup_id
from app.catalog.db import transaction
from app.catalog.models import Backup
from app.catalog.sources import get_source
from app.context import Context
from app.errors import BackupFailedError, ConfigurationError, EquisplitError
from app.repo.pack import PackEntry
from app.sources.files import Entry, walk_tree

BACKUP_TYPES = ("full", "incremental", "differential", "archive")
LOCK_TTL = timedelta(minutes=2)


@dataclass
class BackupResult:
    id: str
    source: str
    type: str
    state: str
    parent_id: str | None
    stats: dict[str, int]
    errors: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)


@dataclass
class _Progress:
    """Thread-safe byte and file counters, forwarded to an optional callback."""

    callback: Callable[[int, int], None] | None
    total: int = 0
    done: int = 0
    files: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, nbytes: int) -> None:
        with self.lock:
            self.done += nbytes
        if self.callback:
            self.callback(self.done, self.total)


def _parent_for(ctx: Context, source_id: int, backup_type: str) -> tuple[str, Backup | None]:
    """The parent a backup compares against; incremental/differential without a full become full."""
    if backup_type in FULL_TYPES:
        return backup_type, None
    with ctx.sessions() as session:
        types = (
            FULL_TYPES
            if backup_type == "differential"
            else ("full", "incremental", "differential", "archive")
        )
        parent = latest_backup(session, source_id, types)
    if parent is None:
        return "full", None
    return backup_type, parent


def _parent_entries(ctx: Context, parent: Backup | None) -> tuple[dict[str, Entry] | None, int]:
    if parent is None:
        return None, 0
    manifest = ctx.repository.read_manifest(parent.id)
    started = clock.as_utc(parent.started_at).timestamp()
    entries = {doc["path"]: Entry.from_json(doc) for doc in manifest["entries"] if doc["type"] == "file"}
    return entries, int(started * 1_000_000_000)


class _Heartbeat(threading.Thread):
    """Renews the source lease while the backup runs."""

    def __init__(self, ctx: Context, name: str, holder: str) -> None:
        super().__init__(daemon=True, name="lease-heartbeat")
        self.ctx, self.lock_name, self.holder = ctx, name, holder
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(LOCK_TTL.total_seconds() / 4):
            locks.renew(self.ctx.sessions, self.lock_name, self.holder, LOCK_TTL)


def run_backup(
    ctx: Context,
    source_name: str,
    backup_type: str,
    *,
    progress: Callable[[int, int], None] | None = None,
    actor: str | None = None,
) -> BackupResult:
    """Back up a registered file-tree source. Raises LockedError if the source is being backed up."""
    if backup_type not in BACKUP_TYPES:
        raise ConfigurationError(
            f"unknown backup type {backup_type!r}", hint="use full, incremental, differential or archive"
        )
    with ctx.sessions() as session:
        source = get_source(session, source_name)
        source_id, root = source.id, Path(source.path or "")
    lock_name = f"source:{source_name}"
    holder = locks.new_holder()
    locks.acquire(ctx.sessions, lock_name, holder, LOCK_TTL)
    heartbeat = _Heartbeat(ctx, lock_name, holder)
    heartbeat.start()
    try:
        _mark_interrupted(ctx, source_id)
        return _run_locked(
            ctx,
            repo_source=(source_id, source_name, root),
            requested=backup_type,
            progress=progress,
            actor=actor,
        )
    finally:
        heartbeat.stopped.set()
        locks.release(ctx.sessions, lock_name, holder)


def _mark_interrupted(ctx: Context, source_id: int) -> None:
    """Backups left `running` by a dead process: we hold the source lease, so none is running now."""
    from sqlalchemy import update

    with transaction(ctx.sessions) as session:
        session.execute(
            update(Backup)
            .where(Backup.source_id == source_id, Backup.state == "running")
            .values(state="interrupted", finished_at=clock.now(), error="the process running it died")
        )


def _run_locked(
    ctx: Context,
    *,
    repo_source: tuple[int, str, Path],
    requested: str,
    progress: Callable[[int, int], None] | None,
    actor: str | None,
) -> BackupResult:
    source_id, source_name, root = repo_source
    repo = ctx.repository
    settings = ctx.settings
    backup_type, parent = _parent_for(ctx, source_id, requested)
    backup_id = new_backup_id()
    started = clock.now()
    storage_class = (
        settings.backup_archive_storage_class
        if backup_type == "archive" and repo.storage.capabilities.storage_classes
        else None
    )
    with transaction(ctx.sessions) as session:
        session.add(
            Backup(
                id=backup_id,
                source_id=source_id,
                type=backup_type,
                parent_id=parent.id if parent else None,
                state="running",
                host=socket.gethostname(),
                started_at=started,
                storage_class=storage_class,
                errors={},
            )
        )
        job = jobs.start_job(session, "backup", source_id=source_id, backup_id=backup_id)
        job_id = job.id
    try:
        result = _execute(
            ctx, backup_id, backup_type, parent, source_name, root, started, storage_class, progress
        )
    except BaseException as exc:
        message = exc.message if isinstance(exc, EquisplitError) else f"{exc.__class__.__name__}: {exc}"
        with transaction(ctx.sessions) as session:
            row = session.get(Backup, backup_id)
            if row is not None:
                row.state, row.finished_at, row.error = "failed", clock.now(), message
            jobs.finish_job(session, job_id, "failed", error=message)
            audit.append(
                session, "backup.failed", backup_id, {"source": source_name, "error": message}, actor
            )
        if isinstance(exc, EquisplitError):
            raise
        raise BackupFailedError(f"backup {backup_id} of {source_name} failed: {message}") from exc
    with transaction(ctx.sessions) as session:
        jobs.finish_job(session, job_id, "succeeded", progress=result.stats)
        audit.append(
            session,
            "backup.created",
            backup_id,
            {
                "source": source_name,
                "type": backup_type,
                "state": result.state,
                "parent": result.parent_id,
                "bytes_read": result.stats["bytes_read"],
                "bytes_stored": result.stats["bytes_stored"],
            },
            actor,
        )
    if requested != backup_type:
        result.warnings.append({"path": ".", "warning": f"no base backup for {requested}: ran a full backup"})
    return result


def _execute(
    ctx: Context,
    backup_id: str,
    backup_type: str,
    parent: Backup | None,
    source_name: str,
    root: Path,
    started: Any,
    storage_class: str | None,
    progress: Callable[[int, int], None] | None,
) -> BackupResult:
    repo = ctx.repository
    settings = ctx.settings
    walk = walk_tree(root)
    parent_entries, parent_started_ns = _parent_entries(ctx, parent)
    to_read, _reused = plan_reads(walk.entries, parent_entries, parent_started_ns)
    units = split_units(to_read, settings.backup_unit_bytes)
    tracker = _Progress(progress, total=sum(e.size for e in to_read))

    def record(pack_id: str, size: int, entries: Sequence[PackEntry]) -> None:
        with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
            chunks.record_pack(session, pack_id, size, entries, backup_id)

    with ctx.sessions() as session:
        known = chunks.known_chunk_ids(session)
    level = settings.backup_compression_level if settings.backup_compression else None
    writer = ChunkWriter(repo, known, record, level=level, storage_class=storage_class)
    errors = list(walk.errors)
    warnings: list[dict[str, str]] = [{"path": s["path"], "warning": s["reason"]} for s in walk.skipped]
    failed_paths: set[str] = set()
    bytes_read = 0
    results_lock = threading.Lock()
    local = threading.local()

    def read_one(entry: Entry) -> None:
        nonlocal bytes_read
        chunker = getattr(local, "chunker", None)
        if chunker is None:
            chunker = local.chunker = repo.new_chunker()
        try:
            outcome = read_file(os.path.join(root, entry.path), entry, chunker, writer, tracker.add)
        except OSError as exc:
            if settings.backup_on_unreadable == "fail":
                raise BackupFailedError(
                    f"cannot read {root / entry.path}: {exc.strerror}",
                    hint="fix its permissions, or set BACKUP_ON_UNREADABLE=skip",
                ) from None
            with results_lock:
                errors.append({"path": entry.path, "error": exc.strerror or exc.__class__.__name__})
                failed_paths.add(entry.path)
            return
        entry.chunks = outcome.chunks
        with results_lock:
            bytes_read += outcome.bytes_read
            if outcome.warning:
                warnings.append({"path": entry.path, "warning": outcome.warning})

    try:
        with ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="backup-read") as pool:
            futures = [pool.submit(read_one, entry) for unit in units for entry in unit.entries]
            _done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in futures:
                if future.done() and future.exception() is not None:
                    for other in futures:
                        other.cancel()
                    raise future.exception()  # type: ignore[misc]
        writer.flush()
    finally:
        writer.close()

    entries = [e for e in walk.entries if e.path not in failed_paths]
    state = "partial" if errors else "complete"
    finished = clock.now()
    file_entries = [e for e in entries if e.type == "file"]
    stats = {
        "files": len(file_entries),
        "files_read": len(to_read) - len(failed_paths),
        "bytes_total": sum(e.size for e in file_entries),
        "bytes_read": bytes_read,
        "bytes_new": writer.stats.bytes_new,
        "bytes_stored": writer.stats.bytes_stored,
        "chunks": sum(len(e.chunks) for e in file_entries),
        "new_chunks": writer.stats.new_chunks,
        "packs": writer.stats.packs,
    }
    manifest = {
        "version": 1,
        "backup": {
            "id": backup_id,
            "source": source_name,
            "source_kind": "files",
            "source_path": str(root),
            "type": backup_type,
            "parent": parent.id if parent else None,
            "state": state,
            "host": socket.gethostname(),
            "started_at": clock.iso(started),
            "finished_at": clock.iso(finished),
            "key_id": repo.keyring.current_key_id.hex(),
            "storage_class": storage_class,
            "stats": stats,
            "errors": errors,
            "warnings": warnings,
        },
        "entries": [e.to_json() for e in entries],
    }
    manifest_size = repo.write_manifest(backup_id, manifest)
    stats["bytes_stored"] += manifest_size
    with transaction(ctx.sessions) as session:
        row = session.get(Backup, backup_id)
        assert row is not None
        row.state, row.finished_at = state, finished
        row.files_total, row.files_read = stats["files"], stats["files_read"]
        row.bytes_total, row.bytes_read = stats["bytes_total"], bytes_read
        row.bytes_new, row.bytes_stored = stats["bytes_new"], stats["bytes_stored"]
        row.chunk_count, row.new_chunk_count, row.pack_count = (
            stats["chunks"],
            stats["new_chunks"],
            stats["packs"],
        )
        row.errors = {"errors": errors, "warnings": warnings}
    return BackupResult(
        backup_id, source_name, backup_type, state, parent.id if parent else None, stats, errors, warnings
    )
