"""A logical export: `pg_dump --format=custom` of one database of a PostgreSQL source, cut into chunks
as it streams, stored through the chunk writer, and recorded as a backup of type `logical` with a
manifest of one file (docs/POSTGRES.md section 5, docs/FORMAT.md section 6)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update

from app import clock
from app.backup.finalize import fail_backup
from app.backup.heartbeat import Heartbeat
from app.backup.hooks import SourceInfo, load_source
from app.backup.manifests import store_entries, write_root
from app.backup.packcheck import PackCheck, check_entries, forget_packs
from app.backup.prepare import LOCAL_LEASE
from app.backup.result import BackupResult
from app.backup.unit import new_writer
from app.backup.writer import ChunkWriter
from app.catalog import audit, jobs, locks
from app.catalog.backups import LOGICAL_TYPE, new_backup_id
from app.catalog.db import transaction
from app.catalog.models import Backup
from app.context import Context
from app.errors import BackupFailedError, EquisplitError, JobCancelledError, SourceError
from app.logical.connection import Connection, connection_for
from app.logical.programs import Program, StderrTail, find_program
from app.logical.server import ServerInfo, source_server
from app.repo.repository import Repository

DUMP_FORMAT = "custom"
DUMP_MODE = 0o600
CANCEL_POLL_SECONDS = 2.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

Progress = Callable[[int, int], None]


@dataclass
class _Dump:
    chunks: list[str]
    size: int
    bytes_new: int


def lease_name(source: str) -> str:
    """One export of a source at a time; base backups hold `source:<name>` and are not kept waiting."""
    return f"logical:{source}"


def dump_name(database: str) -> str:
    """The manifest path of the dump: never a path separator, never hidden."""
    return _UNSAFE.sub("_", database).lstrip(".") + ".dump"


def export_database(
    ctx: Context,
    source_name: str,
    database: str | None = None,
    *,
    progress: Progress | None = None,
    actor: str | None = None,
) -> BackupResult:
    """Export `database` (default: the DSN's) of the PostgreSQL source `source_name` into the
    repository. Complete only once pg_dump exited 0 and the manifest is durable; otherwise the backup
    row is `failed` with the reason."""
    repo = ctx.repository  # opens the keys: a wrong key stops here, before any row is written
    source = load_source(ctx, source_name)
    if source.kind != "postgres":
        raise SourceError(
            f"source {source_name} is a {source.kind} source; logical exports are of PostgreSQL sources",
            hint="register the cluster with `source add NAME --postgres DSN`",
        )
    dsn = source.options.get("dsn")
    if not dsn:
        raise SourceError(
            f"source {source_name} has no DSN (a source re-created by `catalog rebuild` has none)",
            hint="register the cluster again with `source add NAME --postgres DSN`",
        )
    conn = connection_for(str(dsn), database)
    backup_id = new_backup_id()
    lease = lease_name(source_name)
    holder = f"{locks.new_holder()}:{backup_id}"
    locks.acquire(ctx.sessions, lease, holder, LOCAL_LEASE)
    try:
        started = clock.now()
        with transaction(ctx.sessions) as session:
            # We hold the export lease, so an export of this source still `running` died with its process.
            session.execute(
                update(Backup)
                .where(
                    Backup.source_id == source.id,
                    Backup.state == "running",
                    Backup.type == LOGICAL_TYPE,
                )
                .values(state="interrupted", finished_at=started, error="the process running it died")
            )
            session.add(
                Backup(
                    id=backup_id,
                    source_id=source.id,
                    type=LOGICAL_TYPE,
                    state="running",
                    host=socket.gethostname(),
                    started_at=started,
                    errors={},
                )
            )
            job_id = jobs.start_job(session, "backup", source_id=source.id, backup_id=backup_id).id
    except BaseException:
        locks.release(ctx.sessions, lease, holder)
        raise
    heartbeat = Heartbeat(ctx, backup_id, lease, holder, LOCAL_LEASE)
    heartbeat.start()
    try:
        result = _export(ctx, repo, source, conn, backup_id, job_id, started, progress, actor)
    except BaseException as exc:
        fail_backup(ctx, backup_id, exc, actor=actor)
        if isinstance(exc, EquisplitError):
            raise
        raise BackupFailedError(
            f"logical export {backup_id} of source {source_name} failed: {exc.__class__.__name__}: {exc}"
        ) from exc
    finally:
        heartbeat.stopped.set()
        locks.release(ctx.sessions, lease, holder)
    return result


def _export(
    ctx: Context,
    repo: Repository,
    source: SourceInfo,
    conn: Connection,
    backup_id: str,
    job_id: str,
    started: datetime,
    progress: Progress | None,
    actor: str | None,
) -> BackupResult:
    server = source_server(conn, source.name)
    conn = conn.with_database(server.database)  # dump exactly the database just checked
    pg_dump = find_program(ctx.settings.pg_bin_dir, "pg_dump", server.major)
    writer = new_writer(ctx, backup_id, None)
    try:
        dump = _stream(ctx, pg_dump, conn, server, source.name, backup_id, writer, progress)
        writer.flush()
    finally:
        writer.close()
    _check_cancelled(ctx, backup_id)
    finished = clock.now()
    meta = {
        "database": server.database,
        "format": DUMP_FORMAT,
        "dump": dump_name(server.database),
        "size": dump.size,
        "pg_dump_version": pg_dump.version,
        "server_version": server.version,
        "server_version_num": server.version_num,
    }
    stats = {
        "files": 1,
        "files_read": 1,
        "bytes_total": dump.size,
        "bytes_read": dump.size,
        "bytes_new": dump.bytes_new,
        "bytes_stored": writer.stats.bytes_stored,
        "chunks": len(dump.chunks),
        "new_chunks": writer.stats.new_chunks,
        "packs": writer.stats.packs,
    }
    entry = {
        "path": meta["dump"],
        "type": "file",
        "mode": DUMP_MODE,
        "uid": os.getuid(),
        "gid": os.getgid(),
        "size": dump.size,
        "mtime_ns": time.time_ns(),
        "chunks": dump.chunks,
    }
    packs = PackCheck(repo.storage)
    refs = check_entries(ctx, [entry], packs, backup_id=backup_id)
    if not refs.sound:  # the dump deduped against a pack storage lost: never call it complete
        forget_packs(ctx, refs.missing_packs, backup_id=backup_id, files_of=refs.files_of, actor=actor)
        raise BackupFailedError(
            f"logical export {backup_id} of source {source.name}: {next(iter(refs.broken.values()))}",
            hint="run the export again: the lost pack left the chunk index, so its chunks are stored anew",
        )
    stored_entries = store_entries(ctx, backup_id, [entry], packs)
    stored_entries.count_in(stats)
    header: dict[str, Any] = {
        "id": backup_id,
        "source": source.name,
        "source_kind": "postgres",
        "source_path": None,
        "type": LOGICAL_TYPE,
        "parent": None,
        "state": "complete",
        "host": socket.gethostname(),
        "started_at": clock.iso(started),
        "finished_at": clock.iso(finished),
        "key_id": repo.keyring.current_key_id.hex(),
        "storage_class": None,
        "stats": stats,
        "errors": [],
        "warnings": [],
        "job": {"id": job_id, "actor": actor or audit.default_actor()},
        "source_options": dict(source.options),
        "logical": meta,
    }
    stats["bytes_stored"] += write_root(repo, backup_id, header, stored_entries)
    with transaction(ctx.sessions) as session:
        row = session.get(Backup, backup_id)
        assert row is not None
        row.state, row.finished_at = "complete", finished
        row.files_total, row.files_read = 1, 1
        row.bytes_total, row.bytes_read = dump.size, dump.size
        row.bytes_new, row.bytes_stored = dump.bytes_new, stats["bytes_stored"]
        row.chunk_count, row.new_chunk_count, row.pack_count = (
            stats["chunks"],
            stats["new_chunks"],
            stats["packs"],
        )
        row.errors = {"errors": [], "warnings": []}
        jobs.finish_job(session, job_id, "succeeded", progress=stats)
        audit.append(
            session,
            "backup.created",
            backup_id,
            {
                "source": source.name,
                "type": LOGICAL_TYPE,
                "state": "complete",
                "database": server.database,
                "bytes_read": dump.size,
                "bytes_stored": stats["bytes_stored"],
            },
            actor,
        )
    return BackupResult(backup_id, source.name, LOGICAL_TYPE, "complete", None, stats, [], [], job_id)


def _stream(
    ctx: Context,
    pg_dump: Program,
    conn: Connection,
    server: ServerInfo,
    source: str,
    backup_id: str,
    writer: ChunkWriter,
    progress: Progress | None,
) -> _Dump:
    """Run pg_dump and store its standard output chunk by chunk as it arrives; BackupFailedError
    unless it exits 0."""
    args = [
        str(pg_dump.path),
        f"--format={DUMP_FORMAT}",
        "--compress=0",  # zstd compresses each chunk; an uncompressed stream dedups across exports
        "--no-password",
        f"--dbname={conn.conninfo}",
    ]
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=conn.environment(dict(os.environ)),
    )
    assert proc.stdout is not None and proc.stderr is not None
    tail = StderrTail(proc.stderr)
    tail.start()
    dump = _Dump([], 0, 0)
    checked = time.monotonic()
    try:
        for piece in ctx.repository.new_chunker().stream(proc.stdout):
            chunk_id, is_new = writer.store(piece.data)
            dump.chunks.append(chunk_id)
            dump.size += piece.length
            dump.bytes_new += piece.length if is_new else 0
            if progress:
                progress(dump.size, 0)
            if time.monotonic() - checked > CANCEL_POLL_SECONDS:
                checked = time.monotonic()
                _check_cancelled(ctx, backup_id)
    except BaseException:
        proc.kill()
        raise
    finally:
        proc.stdout.close()
        status = proc.wait()
    if status != 0 or dump.size == 0:
        raise BackupFailedError(
            f"pg_dump of database {server.database} of source {source} failed (exit status {status})",
            detail=tail.summary(),
            hint="fix what pg_dump reports (permissions on every table, a lost connection), then export "
            "again; chunks already stored are reused",
        )
    tail.summary()  # joins the thread
    return dump


def _check_cancelled(ctx: Context, backup_id: str) -> None:
    with ctx.sessions() as session:
        if jobs.backup_job_cancelled(session, backup_id):
            raise JobCancelledError(f"logical export {backup_id} was cancelled")
