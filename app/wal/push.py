"""Push (docs/WAL.md section 3): archive a WAL file durably, then record it; look ahead at the files
PostgreSQL has marked ready and archive them on the same call. Storage and catalog only, no broker."""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from app import clock
from app.catalog import wal as catalog_wal
from app.catalog.db import transaction
from app.catalog.sources import get_source
from app.context import Context
from app.errors import EquisplitError, IntegrityError, SourceError, WalConflictError, WalError
from app.repo.format import Kind
from app.repo.repository import Repository
from app.wal import names, segment
from app.wal.pushspool import ARCHIVE_STATUS, READY, ready_files

DONE = ".done"
#: bytes of WAL read at once by one push: each file is held in memory with its sealed copy, so large
#: segments (up to 1 GiB) run on fewer threads
IN_FLIGHT_BUDGET = 256 << 20


@dataclass(frozen=True)
class PushedFile:
    """One file push archived: `outcome` is `stored`, `recorded` (the object was there, the row was
    not), `already archived`, or `stored again` (the row was there, the object was lost)."""

    name: str
    outcome: str
    size: int
    stored_size: int


@dataclass
class PushReport:
    requested: PushedFile
    ahead: list[PushedFile] = field(default_factory=list)
    #: lookahead files that failed, with the reason; PostgreSQL asks for them again later
    failed: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ArchiveTarget:
    """The source a push archives into, and what the catalog knows of its cluster."""

    source_id: int
    source: str
    system_identifier: str | None
    segment_size: int | None


def archive_target(ctx: Context, source: str) -> ArchiveTarget:
    """The PostgreSQL source `source`; SourceError if unknown or not a PostgreSQL source."""
    with ctx.sessions() as session:
        row = get_source(session, source)
        if row.kind != "postgres":
            raise SourceError(
                f"source {source!r} is a {row.kind} source; WAL is archived for PostgreSQL sources only",
                hint="register the cluster with `equisplit-dr source add NAME --postgres DSN`",
            )
        archive = catalog_wal.get_archive(session, row.id)
        return ArchiveTarget(
            row.id,
            row.name,
            archive.system_identifier if archive else None,
            archive.segment_size if archive else None,
        )


def push(
    ctx: Context,
    source: str,
    path: Path,
    *,
    lookahead: int | None = None,
    concurrency: int | None = None,
) -> PushReport:
    """Archive `path` (PostgreSQL's %p) and up to `lookahead` other ready files, in parallel.

    Returns once `path` is durable and recorded; raises if it is not. Each lookahead file that was
    archived is marked done in `archive_status/`, so PostgreSQL does not ask for it.
    """
    settings = ctx.settings
    lookahead = settings.wal_push_lookahead if lookahead is None else lookahead
    concurrency = settings.wal_push_concurrency if concurrency is None else concurrency
    requested = names.parse(path.name)
    target = archive_target(ctx, source)
    repo = ctx.repository
    status_dir = path.parent / ARCHIVE_STATUS
    ahead = ready_files(status_dir, exclude=requested.name, limit=lookahead) if lookahead > 0 else []
    if not ahead:
        return PushReport(push_file(ctx, repo, target, path))
    files = [path, *(path.parent / name for name in ahead)]
    try:
        largest = max(1, path.stat().st_size)
    except FileNotFoundError:
        largest = 1  # push_file reports it
    width = max(1, min(concurrency, len(files), IN_FLIGHT_BUDGET // largest))
    with ThreadPoolExecutor(width, thread_name_prefix="wal-push") as pool:
        futures = [pool.submit(push_file, ctx, repo, target, file) for file in files]
        outcomes = [_outcome(future) for future in futures]
    report_ahead: list[PushedFile] = []
    failed: list[tuple[str, str]] = []
    for name, outcome in zip(ahead, outcomes[1:], strict=True):
        if isinstance(outcome, PushedFile):
            report_ahead.append(outcome)
        else:
            failed.append((name, outcome.message if isinstance(outcome, EquisplitError) else repr(outcome)))
    mark_done(status_dir, [pushed.name for pushed in report_ahead])
    first = outcomes[0]
    if not isinstance(first, PushedFile):
        raise first
    return PushReport(first, report_ahead, failed)


def _outcome(future: Future[PushedFile]) -> PushedFile | Exception:
    try:
        return future.result()
    except Exception as exc:  # each file's failure is reported on its own; the others stand
        return exc


class WalFile(NamedTuple):
    """A WAL file as read for archiving: its parsed name, its bytes and its modification time."""

    name: names.WalName
    data: bytes
    mtime: float


def read_wal_file(path: Path) -> WalFile:
    """Read the WAL file at `path` whole; WalError if its name is not a WAL name or it does not exist."""
    name = names.parse(path.name)
    try:
        with open(path, "rb") as file:
            data = file.read()
            mtime = os.fstat(file.fileno()).st_mtime
    except FileNotFoundError:
        raise WalError(
            f"WAL file {path} does not exist",
            hint="archive_command must be given %p, and runs in the data directory",
        ) from None
    return WalFile(name, data, mtime)


def push_file(ctx: Context, repo: Repository, target: ArchiveTarget, path: Path) -> PushedFile:
    """Archive one WAL file (docs/WAL.md section 3, the table): put durably, then record."""
    return archive_file(ctx, repo, target, read_wal_file(path))


def archive_file(ctx: Context, repo: Repository, target: ArchiveTarget, file: WalFile) -> PushedFile:
    """Archive a WAL file read by `read_wal_file`: put durably, then record. Returns once both are done."""
    name, data, mtime = file.name, file.data, file.mtime
    header = segment.check_page_header(name, data, target.system_identifier)
    segment_size = header.segment_size if header else target.segment_size
    if segment_size is None and name.is_segment:
        segment_size = len(data)
    content_hash = repo.chunk_ids.of(data)
    now = clock.now()
    written_at = min(datetime.fromtimestamp(mtime, UTC), now) if header or name.is_segment else None
    object_name = names.object_name(target.source, name.name)
    what = segment.describe_object(target.source, name.name)
    storage = repo.storage

    with ctx.sessions() as session:
        row = catalog_wal.get_segment(session, target.source_id, name.name)
        recorded_hash = row.content_hash if row else None
        recorded_size = row.stored_size if row else None
    if recorded_hash is not None and recorded_hash != content_hash:
        raise _conflict(what, recorded_hash, content_hash)

    meta = segment.WalMeta(
        source=target.source,
        name=name.name,
        kind=name.kind,
        size=len(data),
        hash=content_hash,
        system_identifier=str(header.system_identifier) if header else None,
        segment_size=segment_size if name.kind != names.HISTORY else None,
        written_at=clock.iso(written_at),
        archived_at=clock.iso(now) or "",
    )
    level = ctx.settings.wal_compression_level if ctx.settings.backup_compression else None
    info = storage.stat(Kind.WAL, object_name)

    if recorded_hash is not None:
        if info is not None and info.size == recorded_size:
            return PushedFile(name.name, "already archived", len(data), info.size)
        sealed = segment.seal(repo, meta, data, level)
        storage.put(Kind.WAL, object_name, sealed)
        with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
            stored = catalog_wal.get_segment(session, target.source_id, name.name)
            if stored is not None:
                stored.stored_size = len(sealed)
                stored.key_id = repo.keyring.current_key_id.hex()
        return PushedFile(name.name, "stored again", len(data), len(sealed))

    if info is not None:
        try:
            sealed = storage.get(Kind.WAL, object_name)
            stored_meta, _ = segment.open_object(repo, target.source, name.name, sealed)
        except IntegrityError as exc:
            raise IntegrityError(
                f"{what} is already in storage but cannot be read: {exc.message}",
                hint="inspect the object; if it is damaged, delete it, and PostgreSQL's next attempt "
                "archives the file again",
            ) from None
        if stored_meta.hash != content_hash:
            raise _conflict(what, stored_meta.hash, content_hash)
        outcome, stored_size = "recorded", info.size
    else:
        sealed = segment.seal(repo, meta, data, level)
        storage.put(Kind.WAL, object_name, sealed)  # durable when it returns
        outcome, stored_size = "stored", len(sealed)

    record = catalog_wal.WalRecord(
        name=name.name,
        kind=name.kind,
        timeline=name.timeline,
        segno=name.segno(segment_size) if segment_size else None,
        size=len(data),
        stored_size=stored_size,
        content_hash=content_hash,
        key_id=repo.keyring.current_key_id.hex(),
        written_at=written_at,
        archived_at=now,
        system_identifier=meta.system_identifier,
        segment_size=segment_size,
    )
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        catalog_wal.record_segment(session, target.source_id, record)
    return PushedFile(name.name, outcome, len(data), stored_size)


def _conflict(what: str, archived_hash: str, new_hash: str) -> WalConflictError:
    return WalConflictError(
        f"{what} is already archived with different content; the archived object is left unchanged",
        detail=f"archived content hash {archived_hash[:16]}…, this file {new_hash[:16]}…",
        hint="a second or re-initialised cluster is archiving into this source: give it its own source "
        "(`equisplit-dr source add NAME --postgres DSN`) and point its archive_command there",
    )


def mark_done(status_dir: Path, archived: list[str]) -> None:
    """Rename `<name>.ready` to `<name>.done` for files archived ahead; PostgreSQL then skips them."""
    if not archived:
        return
    for name in archived:
        try:
            os.rename(status_dir / f"{name}{READY}", status_dir / f"{name}{DONE}")
        except FileNotFoundError:  # PostgreSQL or another push got there first
            continue
    fd = os.open(status_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
