"""Restore a backup (or some of its paths) into a directory, reading packs in parallel."""

from __future__ import annotations

import base64
import contextlib
import os
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import forkserver
from app.catalog import audit, chunks, jobs
from app.catalog.backups import resolve
from app.catalog.db import transaction
from app.catalog.models import Backup
from app.context import Context
from app.errors import EquisplitError, IntegrityError, ObjectNotFoundError, RestoreTargetError
from app.repo.pack import coalesce
from app.repo.repository import Repository
from app.restore.nodes import check_links, detach_links, make_link, make_special
from app.restore.sparse import write_sparse
from app.restore.target import PARTIAL_SUFFIX, check_target, normalise_selection, safe_relpath, selected
from app.sources.files import ENTRY_TYPES, ROOT_PATH, SPECIAL_TYPES

#: Blobs of one pack less than this apart are fetched with one ranged read (app/repo/pack.py: coalesce).
COALESCE_GAP = 1 << 20
MAX_READ = 32 << 20


@dataclass
class RestorePlan:
    backup_id: str
    source: str
    files: int
    dirs: int
    symlinks: int
    bytes: int
    packs: int
    missing_chunks: list[str] = field(default_factory=list)
    hardlinks: int = 0
    specials: int = 0  # FIFOs and device nodes
    #: What was not restored as it was (a device node without root, an unknown entry type).
    warnings: list[dict[str, str]] = field(default_factory=list)


class _FileState:
    """One file being restored: created by the first pack worker that has a chunk for it, written at
    its offsets, renamed into place by whichever worker writes its last chunk. A piece of a big file
    (`piece`: shared out over processes, app/restore/procpool.py) writes into the partial file its
    process's parent made, and leaves renaming it to that parent."""

    __slots__ = ("entry", "fd", "lock", "partial", "path", "piece", "remaining")

    def __init__(self, path: str, entry: dict[str, Any], remaining: int, *, piece: bool = False) -> None:
        self.path = path
        self.partial = path + PARTIAL_SUFFIX
        self.entry = entry
        self.remaining = remaining
        self.piece = piece
        self.fd: int | None = None
        self.lock = threading.Lock()

    def write(self, data: bytes | memoryview, offset: int) -> bool:
        """Write one chunk; True when it was the file's last one (the file is then closed)."""
        with self.lock:
            if self.fd is None and self.piece:
                self.fd = os.open(self.partial, os.O_WRONLY)
            elif self.fd is None:
                self.fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                if self.remaining > 1 or self.entry.get("sparse"):  # sized first: holes need it
                    os.ftruncate(self.fd, self.entry["size"])
            if self.entry.get("sparse"):
                write_sparse(self.fd, data, offset)
            else:
                os.pwrite(self.fd, data, offset)
            self.remaining -= 1
            if self.remaining:
                return False
            os.close(self.fd)
            self.fd = None
            return True

    def discard(self) -> None:
        with self.lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
        if not self.piece:  # a piece's file is its parent process's to remove
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.partial)


def _select(manifest: dict[str, Any], paths: list[str] | None) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = manifest["entries"]
    if paths is None:
        check_links(entries)
        return entries
    chosen = [e for e in entries if selected(e["path"], paths)]
    found = {e["path"] for e in chosen}
    missing = [p for p in paths if p not in found and not any(f.startswith(p + "/") for f in found)]
    if missing:
        raise RestoreTargetError(
            f"the backup holds no path {missing[0]!r}",
            hint="list its files with `equisplit-dr backup show ID --files`",
        )
    # parents of selected entries keep their metadata too, and so does the root
    parents = {"/".join(e["path"].split("/")[:i]) for e in chosen for i in range(1, e["path"].count("/") + 1)}
    parents.add(ROOT_PATH)
    chosen = detach_links(chosen, entries)
    check_links(chosen)
    return [e for e in entries if e["path"] in parents and e["type"] == "dir"] + chosen


class Restorer:
    def __init__(self, ctx: Context, backup: Backup, source: str, manifest: dict[str, Any]) -> None:
        self.ctx, self.backup, self.source, self.manifest = ctx, backup, source, manifest
        self.repo = ctx.repository

    def plan(self, entries: list[dict[str, Any]]) -> tuple[RestorePlan, dict[str, chunks.ChunkLocation]]:
        wanted = {c for e in entries if e["type"] == "file" for c in e["chunks"]}
        with self.ctx.sessions() as session:
            where = chunks.locate(session, wanted)
        plan = RestorePlan(
            self.backup.id,
            self.source,
            files=sum(1 for e in entries if e["type"] == "file"),
            dirs=sum(1 for e in entries if e["type"] == "dir"),
            symlinks=sum(1 for e in entries if e["type"] == "symlink"),
            bytes=sum(e.get("size", 0) for e in entries if e["type"] == "file"),
            packs=len({loc.pack_id for loc in where.values()}),
            missing_chunks=sorted(wanted - where.keys()),
            hardlinks=sum(1 for e in entries if e["type"] == "hardlink"),
            specials=sum(1 for e in entries if e["type"] in SPECIAL_TYPES),
        )
        return plan, where

    def run(
        self,
        target: Path,
        entries: list[dict[str, Any]],
        where: dict[str, chunks.ChunkLocation],
        progress: Callable[[int, int], None] | None,
        keep_partial: bool,
        threads: int,
        processes: int = 1,
    ) -> list[dict[str, str]]:
        """Write `entries` under `target`; returns the warnings (what could not be restored as it was)."""
        target.mkdir(parents=True, exist_ok=True)
        root = str(target)
        made: set[str] = {root}
        files: list[dict[str, Any]] = []
        for e in entries:
            dest = os.path.join(root, safe_relpath(e["path"]))
            if e["type"] == "dir":
                _makedirs(dest, made)
            elif e["type"] == "file":
                _makedirs(os.path.dirname(dest), made)
                files.append(e)
        total = sum(e["size"] for e in files)
        counter = {"done": 0}
        done_lock = threading.Lock()

        def tick(nbytes: int) -> None:
            if progress:
                with done_lock:
                    counter["done"] += nbytes
                    done = counter["done"]
                progress(done, total)

        if processes > 1:
            from app.restore.procpool import restore_files_in_processes

            restore_files_in_processes(self.ctx.settings, root, files, where, tick, keep_partial, processes)
        else:
            restore_files(self.repo, root, files, where, tick, keep_partial, threads)
        warnings: list[dict[str, str]] = []
        for e in entries:
            if e["type"] in SPECIAL_TYPES and make_special(root, e, warnings):
                _apply_metadata(os.path.join(root, safe_relpath(e["path"])), e)
            elif e["type"] == "hardlink":
                make_link(root, e)  # shares its target's inode, so its metadata too
            elif e["type"] not in ENTRY_TYPES:
                warnings.append({"path": e["path"], "warning": f"unknown entry type {e['type']!r} not restored"})
        for e in entries:
            if e["type"] == "symlink":
                dest = os.path.join(root, safe_relpath(e["path"]))
                if os.path.lexists(dest):
                    os.unlink(dest)
                os.symlink(e["target"], dest)
                _apply_metadata(dest, e)
        for e in sorted(  # deepest first, the root (ROOT_PATH) last
            (e for e in entries if e["type"] == "dir"),
            key=lambda e: e["path"].count("/") if e["path"] != ROOT_PATH else -1,
            reverse=True,
        ):
            _apply_metadata(os.path.join(root, safe_relpath(e["path"])), e)
        return warnings


def chunks_of(entry: dict[str, Any]) -> list[str]:
    """The chunks a file entry restores, or a piece of a big file (`piece`: {"first", "count",
    "offset"}, app/restore/procpool.py) its chunks first..first+count-1."""
    piece = entry.get("piece")
    ids: list[str] = entry["chunks"]
    return ids[piece["first"] : piece["first"] + piece["count"]] if piece else ids


def restore_files(
    repo: Repository,
    root: str,
    entries: list[dict[str, Any]],
    where: dict[str, chunks.ChunkLocation],
    progress: Callable[[int], None],
    keep_partial: bool,
    threads: int,
) -> None:
    """Write the files `entries` under `root` (their directories exist), reading each pack they need
    on `threads` threads; on failure, remove the partial files (unless `keep_partial`) and raise."""
    files: list[_FileState] = []
    by_pack: dict[str, list[tuple[str, int, _FileState]]] = defaultdict(list)
    for e in entries:
        piece = e.get("piece")
        ids = chunks_of(e)
        state = _FileState(os.path.join(root, safe_relpath(e["path"])), e, len(ids), piece=piece is not None)
        files.append(state)
        offset = piece["offset"] if piece else 0
        for cid in ids:
            loc = where[cid]
            by_pack[loc.pack_id].append((cid, offset, state))
            offset += loc.raw_length

    def finish_file(state: _FileState) -> None:
        if state.piece:
            return  # renamed by the process that shared the file out, once every piece is written
        os.replace(state.partial, state.path)
        _apply_metadata(state.path, state.entry)

    def span(item: tuple[str, int, _FileState]) -> tuple[int, int]:
        loc = where[item[0]]
        return loc.offset, loc.length

    def restore_pack(pack_id: str) -> None:
        items = sorted(by_pack[pack_id], key=lambda item: where[item[0]].offset)
        for start, end, group in coalesce(items, span, gap=COALESCE_GAP, limit=MAX_READ):
            data = memoryview(repo.read_blob(pack_id, start, end - start))
            for cid, file_offset, state in group:
                loc = where[cid]
                blob = data[loc.offset - start : loc.offset - start + loc.length]
                try:
                    plain = repo.open_chunk(cid, blob, raw_length=loc.raw_length)
                except IntegrityError as exc:
                    raise IntegrityError(
                        f"cannot restore {state.entry['path']}: chunk {cid} in pack {pack_id} is corrupt",
                        detail=exc.message,
                        hint="restore the pack from a replica (secondary region)",
                    ) from None
                if state.write(plain, file_offset):
                    finish_file(state)
                progress(len(plain))

    try:
        for state in files:
            if state.remaining == 0:  # empty file
                os.close(os.open(state.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
                finish_file(state)
        with ThreadPoolExecutor(threads, thread_name_prefix="restore") as pool:
            futures = [pool.submit(restore_pack, pid) for pid in by_pack]
            first_error: BaseException | None = None
            for future in futures:
                exc = future.exception()
                if exc is not None and first_error is None:
                    first_error = exc
                    for other in futures:
                        other.cancel()
            if first_error is not None:
                raise first_error
    except BaseException:
        if not keep_partial:
            for state in files:
                state.discard()
        raise


def _makedirs(path: str, made: set[str]) -> None:
    if path not in made:
        os.makedirs(path, exist_ok=True)
        made.add(path)


_IS_ROOT = os.geteuid() == 0


def finish_big_file(path: str, entry: dict[str, Any]) -> None:
    """Rename a file restored in pieces into place and give it its metadata."""
    os.replace(path + PARTIAL_SUFFIX, path)
    _apply_metadata(path, entry)


def _apply_metadata(path: str, entry: dict[str, Any]) -> None:
    is_link = entry["type"] == "symlink"
    if _IS_ROOT:  # always: a set-group-id directory gives new files its group, not ours
        with contextlib.suppress(OSError):
            os.chown(path, entry.get("uid", 0), entry.get("gid", 0), follow_symlinks=False)
    if not is_link:
        os.chmod(path, entry["mode"])
        for name, value in entry.get("xattrs", {}).items():
            with contextlib.suppress(OSError):
                os.setxattr(path, name, base64.b64decode(value), follow_symlinks=False)
    os.utime(path, ns=(entry["mtime_ns"], entry["mtime_ns"]), follow_symlinks=not is_link)


def restore_backup(
    ctx: Context,
    selector: str,
    target: Path,
    *,
    source: str | None = None,
    paths: list[str] | None = None,
    dry_run: bool = False,
    overwrite: bool = False,
    keep_partial: bool = False,
    progress: Callable[[int, int], None] | None = None,
    actor: str | None = None,
) -> RestorePlan:
    """Restore `selector` (a backup id or `latest` of `source`) into `target`; refuse unsafe targets first."""
    from app.catalog.sources import get_source

    with ctx.sessions() as session:
        source_id = get_source(session, source).id if source else None
        backup = resolve(session, selector, source_id)
        from app.catalog.models import Source

        src = session.get(Source, backup.source_id)
        source_name = src.name if src else "?"
    if backup.state not in ("complete", "partial"):
        raise RestoreTargetError(
            f"backup {backup.id} is {backup.state}, not restorable",
            hint="pick a complete backup from `equisplit-dr backup list`",
        )
    target = target.expanduser().resolve()
    wanted = normalise_selection(paths)
    if not dry_run:
        check_target(target, overwrite=overwrite)
    manifest = ctx.repository.read_manifest(backup.id)
    entries = _select(manifest, wanted)
    restorer = Restorer(ctx, backup, source_name, manifest)
    plan, where = restorer.plan(entries)
    if plan.missing_chunks:
        raise ObjectNotFoundError(
            "chunk",
            plan.missing_chunks[0],
            "the catalog's chunk index",
            hint=f"{len(plan.missing_chunks)} chunk(s) unknown; run `equisplit-dr catalog rebuild`",
        )
    if dry_run:
        for pack_id in sorted({loc.pack_id for loc in where.values()}):
            if ctx.repository.storage.stat("packs", pack_id) is None:
                raise ObjectNotFoundError("packs", pack_id, ctx.repository.storage.location)
        return plan
    # Worker processes for a big restore (docs/BACKUP.md, "Using every core"); the fork server starts
    # now, so its imports overlap the job row and the directories.
    processes = forkserver.processes_for(ctx.settings)
    if plan.bytes < ctx.settings.backup_processes_min_bytes or plan.files < 2:
        processes = 1
    if processes > 1:
        forkserver.warm_up()
    with transaction(ctx.sessions) as session:
        job_id = jobs.start_job(session, "restore", source_id=backup.source_id, backup_id=backup.id).id
    try:
        try:
            plan.warnings = restorer.run(
                target, entries, where, progress, keep_partial, ctx.settings.worker_threads, processes
            )
        finally:
            if processes > 1:
                forkserver.stop_server(used=True)
    except BaseException as exc:
        message = exc.message if isinstance(exc, EquisplitError) else f"{exc.__class__.__name__}: {exc}"
        finish_restore_job(
            ctx,
            job_id,
            backup.id,
            "restore.failed",
            {"target": str(target), "error": message},
            actor,
            message,
        )
        raise
    finish_restore_job(
        ctx,
        job_id,
        backup.id,
        "restore.completed",
        {
            "target": str(target),
            "files": plan.files,
            "bytes": plan.bytes,
            "paths": wanted,
            **({"warnings": plan.warnings} if plan.warnings else {}),
        },
        actor,
    )
    return plan


def finish_restore_job(
    ctx: Context,
    job_id: str,
    backup_id: str,
    action: str,
    detail: dict[str, Any],
    actor: str | None,
    error: str | None = None,
) -> None:
    """Close a restore's (or an import's) job and audit it, in one transaction; the job's progress is
    the detail's `files` and `bytes`."""
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        jobs.finish_job(
            session,
            job_id,
            "failed" if error else "succeeded",
            error=error,
            progress={k: v for k, v in detail.items() if k in ("files", "bytes")},
        )
        audit.append(session, action, backup_id, detail, actor)
