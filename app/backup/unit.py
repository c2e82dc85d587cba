"""Step 2 of a backup: one unit of files, read on a worker, its result written to storage.

Idempotent: a unit already done returns at once; a unit redelivered after a crash reads its files
again, and the chunks its first attempt stored are found in the index and not stored twice.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, literal, select, update
from sqlalchemy.orm import configure_mappers

from app import clock
from app.backup import known, objects
from app.backup.blocks import BlockRule, ChunkerChoice
from app.backup.heartbeat import Heartbeat
from app.backup.prepare import CLUSTER_LEASE, LEASE_PREFIX, lease_name
from app.backup.reader import READ_ATTEMPTS, read_file
from app.backup.writer import ChunkWriter, DeferredStore, PackRecorder
from app.catalog import chunks, jobs
from app.catalog.db import transaction
from app.catalog.models import Backup, BackupUnit, Job, Lock, Source
from app.context import Context
from app.errors import BackupFailedError, JobCancelledError
from app.repo.format import Tier
from app.sources.confined import VANISHED, ChangedUnderWalk, Seen, SourceRoot
from app.sources.files import Entry

Progress = Callable[[int], None]
CANCEL_POLL_SECONDS = 2.0


@dataclass
class UnitOutcome:
    backup_id: str
    number: int
    files: int
    bytes_read: int
    bytes_new: int
    seconds: float
    worker: str
    skipped: bool = False
    #: The unit's result, when it was handed back in memory instead of stored (`keep_result`).
    result: dict[str, Any] | None = None


def worker_name() -> str:
    """Who runs a unit outside the cluster (the CLI's own worker processes): host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def pack_recorder(ctx: Context, backup_id: str, tier: str = Tier.STANDARD) -> PackRecorder:
    """Index each pack of `tier` once durable, attributing it to the backup that stored it."""

    def record(pack_id: str, size: int, entries: Any) -> None:
        with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
            chunks.record_pack(session, pack_id, size, entries, backup_id, tier)

    return record


def new_writer(
    ctx: Context,
    backup_id: str,
    storage_class: str | None,
    claim: Callable[[str], bool] | None = None,
    *,
    tier: str = Tier.STANDARD,
    retain_until: str | None = None,
) -> ChunkWriter:
    """The writer of a backup's file chunks: it dedups against, and writes, packs of `tier` alone."""
    s = ctx.settings
    return ChunkWriter(
        ctx.repository,
        known.known_for(ctx, backup_id, tier),
        pack_recorder(ctx, backup_id, tier),
        level=s.backup_compression_level if s.backup_compression else None,
        storage_class=storage_class,
        claim=claim,
        tier=tier,
        retain_until=clock.parse_iso(retain_until) if retain_until else None,
    )


class _CancelWatch:
    """Answers `is the job cancelled?` from the catalog, at most every CANCEL_POLL_SECONDS."""

    def __init__(self, ctx: Context, backup_id: str) -> None:
        self.ctx, self.backup_id = ctx, backup_id
        self._checked = time.monotonic()  # the claim has just seen the job not cancelled
        self._cancelled = False
        self._lock = threading.Lock()

    def check(self) -> None:
        with self._lock:
            if not self._cancelled and time.monotonic() - self._checked > CANCEL_POLL_SECONDS:
                self._checked = time.monotonic()
                with self.ctx.sessions() as session:
                    self._cancelled = jobs.backup_job_cancelled(session, self.backup_id)
        if self._cancelled:
            raise JobCancelledError(f"backup {self.backup_id} was cancelled")


# A unit's catalog statements, built once: building them costs more than running them.
_UNIT_KEY = (BackupUnit.backup_id == bindparam("unit_backup"), BackupUnit.number == bindparam("unit_number"))
_CLAIM_READ = (
    select(
        Backup.state,
        BackupUnit.state,
        BackupUnit.bytes,
        Source.name,
        Job.id,
        Job.state,
        Job.heartbeat_at,
        Lock.expires_at,
    )
    .select_from(BackupUnit)
    .join(Backup, Backup.id == BackupUnit.backup_id)
    .outerjoin(Source, Source.id == Backup.source_id)
    .outerjoin(Job, (Job.backup_id == Backup.id) & (Job.kind == "backup"))
    # the source's lease as the cluster holds it (prepare.lease_name; holder `cluster:<backup id>`)
    .outerjoin(
        Lock, (Lock.name == literal(LEASE_PREFIX) + Source.name) & (Lock.holder == bindparam("lease_holder"))
    )
    .where(*_UNIT_KEY)
    .limit(1)
)
_UNIT_UPDATE = (
    update(BackupUnit)
    .where(*_UNIT_KEY)
    .values(
        state=bindparam("new_state"),
        attempts=BackupUnit.attempts + 1,
        worker=bindparam("claimed_by"),
        started_at=bindparam("claimed_at"),
        error=None,
    )
)
_UNIT_DONE = (
    update(BackupUnit)
    .where(*_UNIT_KEY)
    .values(
        state="done",
        finished_at=bindparam("done_at"),
        seconds=bindparam("took"),
        bytes_read=bindparam("read"),
        bytes_new=bindparam("new"),
    )
)
_JOB_BEAT = update(Job).where(Job.id == bindparam("job")).values(heartbeat_at=bindparam("beat_at"))
_LEASE_RENEW = (
    update(Lock)
    .where(Lock.name == bindparam("lease_name"), Lock.holder == bindparam("lease_holder"))
    .values(expires_at=bindparam("lease_until"))
)
#: A claim renews the source's lease and beats the job only when that was last done longer ago than
#: this (by another unit's claim or done, or by a running unit's Heartbeat, every 30 s): two writes
#: fewer for most units, and neither the lease (CLUSTER_LEASE) nor the job (JOB_STALE_SECONDS) comes
#: near expiry between them.
CLAIM_BEAT_AFTER = timedelta(seconds=30)


def prepare_process(ctx: Context) -> None:
    """Make a fresh worker process's first unit cost what its later ones do: configure the catalog's
    ORM mappers and compile a unit's statements (SQLAlchemy does both on first use), by running
    them against a unit that does not exist, in a transaction that is rolled back."""
    configure_mappers()
    with ctx.sessions() as session:
        conn, none = session.connection(), {"unit_backup": "", "unit_number": -1}
        conn.execute(_CLAIM_READ, {**none, "lease_holder": ""}).all()
        conn.execute(_UNIT_UPDATE, {**none, "new_state": "", "claimed_by": "", "claimed_at": clock.now()})
        conn.execute(_UNIT_DONE, {**none, "done_at": clock.now(), "took": 0.0, "read": 0, "new": 0})
        conn.execute(_JOB_BEAT, {"job": "", "beat_at": clock.now()})
        conn.execute(_LEASE_RENEW, {"lease_name": "", "lease_holder": "", "lease_until": clock.now()})
        session.rollback()


@dataclass
class ClaimedUnit:
    backup_id: str
    number: int
    bytes: int
    worker: str


def _claim(
    ctx: Context, backup_id: str, number: int, *, cluster: bool, worker: str | None = None
) -> tuple[ClaimedUnit | None, str]:
    """Mark the unit running (None if it is done already) and return the source's lease name. Refuse
    if the backup is no longer running. In a cluster, the same transaction renews the lease (held by
    the backup, not by a process) and beats the job when either is due (CLAIM_BEAT_AFTER). One read and
    one to three short writes in one commit, on the Core connection (the ORM's UPDATE path cost twice
    the client CPU of the statements): a unit's fixed cost is counted in milliseconds
    (bench/cluster_bench.py)."""
    holder = f"cluster:{backup_id}"
    with transaction(ctx.sessions) as session:
        conn = session.connection()
        found = conn.execute(
            _CLAIM_READ, {"unit_backup": backup_id, "unit_number": number, "lease_holder": holder}
        ).one_or_none()
        if found is None:
            raise BackupFailedError(f"backup {backup_id} has no unit {number}")
        backup_state, unit_state, unit_bytes, source_name, job_id, job_state, beat_at, expires_at = found
        lease = lease_name(source_name or "?")
        if unit_state == "done":
            return None, lease
        if backup_state != "running":
            raise BackupFailedError(f"backup {backup_id} is {backup_state}; unit {number} not run")
        if job_state == "cancelled":
            raise JobCancelledError(f"backup {backup_id} was cancelled")
        worker, now = worker or worker_name(), clock.now()
        conn.execute(
            _UNIT_UPDATE,
            {
                "unit_backup": backup_id,
                "unit_number": number,
                "new_state": "running",
                "claimed_by": worker,
                "claimed_at": now,
            },
        )
        if cluster:
            if expires_at is None or clock.as_utc(expires_at) < now + CLUSTER_LEASE - CLAIM_BEAT_AFTER:
                renewal = {"lease_name": lease, "lease_holder": holder, "lease_until": now + CLUSTER_LEASE}
                conn.execute(_LEASE_RENEW, renewal)
            stale = beat_at is None or clock.as_utc(beat_at) < now - CLAIM_BEAT_AFTER
            if job_id is not None and job_state == "running" and stale:
                conn.execute(_JOB_BEAT, {"job": job_id, "beat_at": now})
        return ClaimedUnit(backup_id, number, unit_bytes, worker), lease


def run_unit(
    ctx: Context,
    backup_id: str,
    number: int,
    *,
    writer: ChunkWriter | None = None,
    pool: Executor | None = None,
    progress: Progress | None = None,
    cluster: bool = False,
    claim: Callable[[str], bool] | None = None,
    worker: str | None = None,
    input_doc: dict[str, Any] | None = None,
    keep_result: bool = False,
) -> UnitOutcome:
    """Read the unit's files and store their chunks. With a shared `writer` (one process), the caller
    flushes it; otherwise the unit's own packs are durable before its result is written. `worker`
    names who runs it (a Celery node name, as Flower shows it); `host:pid` by default. A backup run on
    one machine hands the unit its input (`input_doc`) and takes its result back in the outcome
    (`keep_result`) instead of through storage (three requests a unit on S3)."""
    unit, lease = _claim(ctx, backup_id, number, cluster=cluster, worker=worker)
    if unit is None:
        return _outcome_of_done(ctx, backup_id, number)
    heartbeat = None
    if cluster:  # beaten just now, with the claim
        heartbeat = Heartbeat(ctx, backup_id, lease, f"cluster:{backup_id}", CLUSTER_LEASE)
        heartbeat.start()
    try:
        return _run_claimed(
            ctx,
            unit,
            writer=writer,
            pool=pool,
            progress=progress,
            claim=claim,
            input_doc=input_doc,
            keep_result=keep_result,
        )
    finally:
        if heartbeat is not None:
            heartbeat.stopped.set()


def _run_claimed(
    ctx: Context,
    unit: ClaimedUnit,
    *,
    writer: ChunkWriter | None,
    pool: Executor | None,
    progress: Progress | None,
    claim: Callable[[str], bool] | None,
    input_doc: dict[str, Any] | None = None,
    keep_result: bool = False,
) -> UnitOutcome:
    backup_id, number = unit.backup_id, unit.number
    started = time.monotonic()
    repo = ctx.repository
    doc = input_doc if input_doc is not None else objects.read(repo, objects.input_name(backup_id, number))
    root = doc["root"]
    entries = [Entry.from_json(e) for e in doc["entries"]]
    # a big file's piece (app/backup/plan.py, Item): where it starts, how long, and what was stored
    pieces: list[dict[str, Any] | None] = [e.get("piece") for e in doc["entries"]]
    # what the walk saw of each file, to notice one replaced since (app/backup/plan.py, Item)
    seen = [Seen(e.get("device", 0), e.get("inode", 0)) for e in doc["entries"]]
    own_writer = writer is None
    writer = writer or new_writer(
        ctx,
        backup_id,
        doc.get("storage_class"),
        claim,
        tier=doc.get("tier", Tier.STANDARD),
        retain_until=doc.get("retain_until"),
    )
    cancel = _CancelWatch(ctx, backup_id)
    errors: list[dict[str, str]] = []
    warnings: list[dict[str, str]] = []
    totals = {"read": 0, "new": 0}
    results_lock = threading.Lock()
    local = threading.local()
    options = doc.get("read", {})
    on_unreadable = options.get("on_unreadable", ctx.settings.backup_on_unreadable)
    missing_ok = bool(options.get("missing_ok", False))
    attempts = int(options.get("attempts", READ_ATTEMPTS))
    source = SourceRoot(root, options.get("links", ()))
    choice = ChunkerChoice(BlockRule.from_json(options.get("blocks")))

    def read_batch(batch: range) -> None:
        """Read a batch of files; their in-memory chunks are looked up and stored together."""
        sink = DeferredStore(writer)
        for index in batch:
            read_one(index, sink)
        new = sink.drain()
        with results_lock:
            totals["new"] += new

    def read_one(index: int, sink: DeferredStore) -> None:
        entry, piece = entries[index], pieces[index]
        cancel.check()
        chunker = getattr(local, "chunker", None)
        if chunker is None:
            chunker = local.chunker = repo.new_chunker()
        try:
            outcome = read_file(
                source,
                entry,
                choice.for_path(entry.path, chunker),
                sink,
                progress or _ignore,
                attempts=attempts,
                piece=(piece["offset"], piece["length"]) if piece is not None else None,
                seen=seen[index],
            )
        except ChangedUnderWalk as changed:
            entry.chunks = []
            entry.type = "vanished"
            if changed.code == VANISHED and missing_ok:
                return  # e.g. a table dropped during a PostgreSQL backup: WAL replay agrees
            with results_lock:  # not stored: named, and the backup is partial (app/backup/finalize.py)
                warnings.append({"path": entry.path, "warning": changed.reason, "code": changed.code})
            return
        except OSError as exc:
            if on_unreadable == "fail":
                raise BackupFailedError(
                    f"cannot read {os.path.join(root, entry.path)}: {exc.strerror}",
                    hint="fix its permissions, or set BACKUP_ON_UNREADABLE=skip",
                ) from None
            with results_lock:
                errors.append({"path": entry.path, "error": exc.strerror or exc.__class__.__name__})
            entry.chunks = []
            entry.type = "unreadable"
            return
        entry.chunks = outcome.chunks
        if piece is not None:
            piece["read"] = outcome.stored
        with results_lock:
            totals["read"] += outcome.bytes_read
            totals["new"] += outcome.bytes_new
            if outcome.warning:
                warning = {"path": entry.path, "warning": outcome.warning}
                if outcome.code:
                    warning["code"] = outcome.code
                warnings.append(warning)

    own_pool = pool is None
    executor = pool or ThreadPoolExecutor(ctx.settings.worker_threads, thread_name_prefix="unit-read")
    try:
        futures = [executor.submit(read_batch, batch) for batch in _batches(entries)]
        wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future.done() and future.exception() is not None:
                for other in futures:
                    other.cancel()
                raise future.exception()  # type: ignore[misc]
        if own_writer:
            writer.flush()
    except BaseException as exc:
        _mark_unit_failed(ctx, backup_id, number, exc)
        raise
    finally:
        if own_pool:
            executor.shutdown(wait=True, cancel_futures=True)
        if own_writer:
            writer.close()
    kept = [
        _with_piece(e, p)
        for e, p in zip(entries, pieces, strict=True)
        if e.type not in ("unreadable", "vanished")
    ]
    result = {
        "entries": kept,
        "errors": errors,
        "warnings": warnings,
        "bytes_read": totals["read"],
        "bytes_new": totals["new"],
    }
    if not keep_result:
        objects.write(repo, objects.output_name(backup_id, number), result)
    seconds = time.monotonic() - started
    with transaction(ctx.sessions) as session:
        session.connection().execute(
            _UNIT_DONE,
            {
                "unit_backup": backup_id,
                "unit_number": number,
                "done_at": clock.now(),
                "took": seconds,
                "read": totals["read"],
                "new": totals["new"],
            },
        )
    return UnitOutcome(
        backup_id,
        number,
        len(entries),
        totals["read"],
        totals["new"],
        seconds,
        unit.worker,
        result=result if keep_result else None,
    )


#: Small files go to the reader threads in batches: one future per file cost as much as reading a 5 KiB file.
BATCH_FILES = 32
BATCH_BYTES = 1 << 20


def _batches(entries: list[Entry]) -> list[range]:
    """Consecutive runs of entry indexes, each at most BATCH_FILES files and about BATCH_BYTES."""
    batches: list[range] = []
    start = size = 0
    for index, entry in enumerate(entries):
        if index > start and (index - start >= BATCH_FILES or size + entry.size > BATCH_BYTES):
            batches.append(range(start, index))
            start, size = index, 0
        size += entry.size
    if start < len(entries):
        batches.append(range(start, len(entries)))
    return batches


def _with_piece(entry: Entry, piece: dict[str, Any] | None) -> dict[str, Any]:
    doc = entry.to_json()
    if piece is not None:
        doc["piece"] = {"offset": piece["offset"], "read": piece.get("read", 0)}
    return doc


def _ignore(_n: int) -> None:
    return None


def _outcome_of_done(ctx: Context, backup_id: str, number: int) -> UnitOutcome:
    with ctx.sessions() as session:
        row = session.get(BackupUnit, (backup_id, number))
        assert row is not None
        return UnitOutcome(
            backup_id,
            number,
            row.files,
            row.bytes_read,
            row.bytes_new,
            row.seconds or 0.0,
            row.worker or "",
            skipped=True,
        )


def _mark_unit_failed(ctx: Context, backup_id: str, number: int, exc: BaseException) -> None:
    with transaction(ctx.sessions) as session:
        row = session.get(BackupUnit, (backup_id, number))
        if row is not None:
            row.state, row.error = "failed", str(exc)[:2000]
