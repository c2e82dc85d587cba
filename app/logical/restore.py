"""Import a logical export into an empty database: the dump's chunks, read and checked in order, are
streamed into `pg_restore --single-transaction`, so a failure leaves the target as it was
(docs/POSTGRES.md section 5)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from app.catalog import chunks, jobs
from app.catalog.backups import LOGICAL_TYPE, get_backup, latest_backup
from app.catalog.db import transaction
from app.catalog.models import Backup, Source
from app.catalog.readers import registered_reader
from app.context import Context
from app.errors import (
    BackupNotFoundError,
    EquisplitError,
    ErasureError,
    IntegrityError,
    ObjectNotFoundError,
    RestoreTargetError,
)
from app.gdpr.reapply import ReapplyReport, reapply_erasures
from app.logical.connection import Connection, connection_for
from app.logical.programs import Program, StderrTail, find_program
from app.logical.server import empty_target
from app.repo.format import Kind
from app.repo.repository import Repository
from app.restore.engine import finish_restore_job

#: Chunks read ahead of pg_restore, in parallel: bounds memory to this many chunks (4 MiB at most each).
READ_AHEAD = 8

Progress = Callable[[int, int], None]


@dataclass
class ImportReport:
    backup_id: str
    source: str
    database: str
    target_database: str
    bytes: int
    chunks: int
    packs: int
    seconds: float
    job_id: str


def resolve_export(ctx: Context, selector: str, source: str | None) -> tuple[Backup, str]:
    """A logical export by id, or the newest complete one of `source` for `latest`."""
    from app.catalog.sources import get_source

    with ctx.sessions() as session:
        source_id = get_source(session, source).id if source else None
        if selector == "latest":
            if source_id is None:
                raise BackupNotFoundError("`latest` needs a source", hint="add --source NAME")
            backup = latest_backup(session, source_id, (LOGICAL_TYPE,))
            if backup is None:
                raise BackupNotFoundError(
                    f"source {source} has no complete logical export",
                    hint=f"make one with `equisplit-dr pg export --source {source}`",
                )
        else:
            backup = get_backup(session, selector)
        row = session.get(Source, backup.source_id)
        session.expunge(backup)
        return backup, row.name if row else "?"


@registered_reader("import")
def import_export(
    ctx: Context,
    selector: str,
    target_dsn: str,
    *,
    source: str | None = None,
    no_privileges: bool = False,
    progress: Progress | None = None,
    actor: str | None = None,
) -> ImportReport:
    """Restore the logical export `selector` into the empty database at `target_dsn`. Everything that
    can be checked is checked before the target is written: the export, its chunks and packs, the
    target's emptiness, the programs. Registered as a running reader while it runs (garbage collection
    keeps the packs it may have located: docs/GC.md)."""
    repo = ctx.repository
    backup, source_name = resolve_export(ctx, selector, source)
    if backup.type != LOGICAL_TYPE:
        raise BackupNotFoundError(
            f"backup {backup.id} is a {backup.type} backup, not a logical export",
            hint="restore it with `equisplit-dr restore` or `dr recover`; `backup list` shows the "
            "exports as type logical",
        )
    if backup.state != "complete":
        raise RestoreTargetError(
            f"logical export {backup.id} is {backup.state}, not restorable",
            hint="pick a complete export from `equisplit-dr backup list`",
        )
    manifest = repo.read_manifest(backup.id)
    meta: dict[str, Any] = manifest["backup"]["logical"]
    (entry,) = [e for e in manifest["entries"] if e["path"] == meta["dump"]]
    chunk_ids: list[str] = entry["chunks"]
    where = _locate(ctx, repo, chunk_ids)
    target = connection_for(target_dsn)
    server = empty_target(target)
    target = target.with_database(server.database)
    dump_major = int(str(meta["pg_dump_version"]).split(".")[0])
    pg_restore = find_program(ctx.settings.pg_bin_dir, "pg_restore", max(server.major, dump_major))
    with transaction(ctx.sessions) as session:
        job_id = jobs.start_job(session, "restore", source_id=backup.source_id, backup_id=backup.id).id
    detail = {
        "kind": LOGICAL_TYPE,
        "database": meta["database"],
        "target": target.conninfo,  # no password: connection_for removed it
    }
    started = time.monotonic()
    try:
        size = _pipe(ctx, pg_restore, target, chunk_ids, where, entry["size"], no_privileges, progress)
    except BaseException as exc:
        message = exc.message if isinstance(exc, EquisplitError) else f"{exc.__class__.__name__}: {exc}"
        finish_restore_job(
            ctx, job_id, backup.id, "restore.failed", {**detail, "error": message}, actor, message
        )
        raise
    erasures = _reapply_erasures(ctx, source_name, meta["database"], target, actor)
    if not erasures.ok:
        message = erasures.describe()
        finish_restore_job(
            ctx, job_id, backup.id, "restore.failed", {**detail, "error": message, "erasures": erasures.to_json()}, actor, message
        )
        raise ErasureError(
            message,
            hint=f"drop database {server.database} (it holds the import), fix the request's SQL, and import again",
        )
    detail["erasures"] = erasures.to_json()
    report = ImportReport(
        backup.id,
        source_name,
        meta["database"],
        server.database,
        size,
        len(chunk_ids),
        len({loc.pack_id for loc in where.values()}),
        time.monotonic() - started,
        job_id,
    )
    finish_restore_job(ctx, job_id, backup.id, "restore.completed", {**detail, "bytes": size}, actor)
    return report


def _reapply_erasures(
    ctx: Context, source: str, database: str, target: Connection, actor: str | None
) -> ReapplyReport:
    """The source's erasure requests for the exported database, run in the imported one, each in its
    own transaction, before the import is reported done (docs/GDPR.md)."""
    import psycopg

    def run(_database: str, sql: str) -> str | None:
        try:
            with target.connect("equisplit-dr erasure") as conn, conn.transaction():
                conn.execute(sql.encode())
        except psycopg.Error as exc:
            return str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        return None

    return reapply_erasures(
        ctx,
        source,
        f"import {target.database}",
        run,
        databases=lambda name: target.database or name if name == database else None,
        actor=actor,
    )


def _locate(ctx: Context, repo: Repository, chunk_ids: list[str]) -> dict[str, chunks.ChunkLocation]:
    """Where every chunk is; ObjectNotFoundError naming the first chunk the index lacks or the first
    pack storage lacks."""
    with ctx.sessions() as session:
        where = chunks.locate(session, chunk_ids)
    missing = [c for c in chunk_ids if c not in where]
    if missing:
        raise ObjectNotFoundError(
            "chunk",
            missing[0],
            "the catalog's chunk index",
            hint=f"{len(missing)} chunk(s) unknown; run `equisplit-dr catalog rebuild`",
        )
    for pack_id in sorted({loc.pack_id for loc in where.values()}):
        if repo.storage.stat(Kind.PACKS, pack_id) is None:
            raise ObjectNotFoundError(Kind.PACKS, pack_id, repo.storage.location)
    return where


def _plaintexts(
    repo: Repository, chunk_ids: list[str], where: dict[str, chunks.ChunkLocation], threads: int
) -> Generator[bytes, None, None]:
    """The chunks' plaintexts in order, each checked against its id, READ_AHEAD read in parallel."""

    def fetch(chunk_id: str) -> bytes:
        loc = where[chunk_id]
        blob = repo.read_blob(loc.pack_id, loc.offset, loc.length)
        try:
            return repo.open_chunk(chunk_id, blob, raw_length=loc.raw_length)
        except IntegrityError as exc:
            raise IntegrityError(
                f"chunk {chunk_id} in pack {loc.pack_id} is corrupt",
                detail=exc.message,
                hint="restore the pack from a replica (secondary region), or import another export",
            ) from None

    pool = ThreadPoolExecutor(max(1, min(threads, READ_AHEAD)), thread_name_prefix="logical-read")
    pending: deque[Future[bytes]] = deque()
    try:
        for chunk_id in chunk_ids:
            pending.append(pool.submit(fetch, chunk_id))
            if len(pending) >= READ_AHEAD:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _pipe(
    ctx: Context,
    pg_restore: Program,
    target: Connection,
    chunk_ids: list[str],
    where: dict[str, chunks.ChunkLocation],
    size: int,
    no_privileges: bool,
    progress: Progress | None,
) -> int:
    """Feed the dump to pg_restore; the bytes fed. pg_restore is killed, never let commit, on any error
    of ours, so its single transaction rolls back."""
    args = [
        str(pg_restore.path),
        "--format=custom",
        "--no-owner",
        "--single-transaction",
        "--exit-on-error",
        "--no-password",
        *(["--no-privileges"] if no_privileges else []),
        f"--dbname={target.conninfo}",
    ]
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=target.environment(dict(os.environ)),
    )
    assert proc.stdin is not None and proc.stderr is not None
    tail = StderrTail(proc.stderr)
    tail.start()
    written = 0
    broken = False
    plaintexts = _plaintexts(ctx.repository, chunk_ids, where, ctx.settings.worker_threads)
    try:
        with contextlib.closing(plaintexts):
            for data in plaintexts:
                try:
                    proc.stdin.write(data)
                except BrokenPipeError:
                    broken = True  # pg_restore stopped reading: its status and stderr say why
                    break
                written += len(data)
                if progress:
                    progress(written, size)
        if not broken and written != size:
            raise IntegrityError(
                f"the export's chunks add up to {written} bytes, not the {size} its manifest records",
                hint="the manifest or the chunk index is damaged; import another export",
            )
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    except BaseException:
        proc.kill()  # before its stdin closes: pg_restore must not see an end and commit
        proc.wait()
        with contextlib.suppress(OSError):
            proc.stdin.close()
        raise
    status = proc.wait()
    if status != 0 or broken:
        raise RestoreTargetError(
            f"pg_restore into database {target.database} failed (exit status {status}); its single "
            "transaction was rolled back, so the database is as it was",
            detail=tail.summary(),
            hint="fix what pg_restore reports (a missing role: --no-privileges, or create it; a missing "
            "extension: install it on the target server) and import again",
        )
    tail.summary()
    return written
