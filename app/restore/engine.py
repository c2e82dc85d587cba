"""Restore a backup (or some of its paths) into a directory, reading packs in parallel."""

from __future__ import annotations

import contextlib
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app import forkserver
from app.archive.thaw import thaw_for_backup
from app.catalog import audit, backup_regions, chunks, jobs
from app.catalog.backups import resolve
from app.catalog.db import transaction
from app.catalog.models import Backup
from app.catalog.readers import registered_reader
from app.context import Context
from app.errors import (
    ConfigurationError,
    EquisplitError,
    IntegrityError,
    ObjectNotFoundError,
    RestoreTargetError,
)
from app.repo.format import tier_of
from app.repo.pack import coalesce
from app.repo.repository import Repository
from app.restore import metadata
from app.restore.nodes import check_links, detach_links, make_link, make_special
from app.restore.preflight import check_packs
from app.restore.sparse import write_sparse
from app.restore.target import (
    check_target,
    make_target,
    mark_finished,
    mark_unfinished,
    normalise_selection,
    remove_partials,
    restore_identity,
    resumes,
    safe_relpath,
    scan,
    selected,
)
from app.restore.tree import TargetTree, fail, partial_name, split
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
    #: Entries already in the target: left as they are (skip_existing) or replaced (overwrite).
    skipped: int = 0
    replaced: int = 0
    #: Worker processes that wrote the files (1: threads in this process).
    processes: int = 1
    #: The thaw of its cold packs, for an archive in GLACIER or DEEP_ARCHIVE (docs/ARCHIVE.md).
    thaw: dict[str, Any] | None = None


class _FileState:
    """One file being restored: created under a short temporary name in its own directory by the
    first pack worker that has a chunk for it, written at its offsets, given its metadata and renamed
    into place by whichever worker writes its last chunk. A piece of a big file (`piece`: shared out
    over processes, app/restore/procpool.py) writes into the partial file its process's parent made
    (the entry's `partial`), and leaves finishing it to that parent."""

    __slots__ = ("created", "entry", "fd", "lock", "name", "parent", "partial", "path", "piece", "remaining")

    def __init__(self, path: str, entry: dict[str, Any], remaining: int, *, piece: bool = False) -> None:
        self.path = path
        self.parent, self.name = split(path)
        self.partial: str = entry["partial"] if piece else partial_name(self.name)
        self.entry = entry
        self.remaining = remaining
        self.piece = piece
        self.created = False
        self.fd: int | None = None
        self.lock = threading.Lock()

    def _open(self, tree: TargetTree) -> int:
        with tree.dir(self.parent) as dir_fd:
            if self.piece:
                return os.open(self.partial, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            fd = create_partial(dir_fd, self.partial)
            self.created = True
            return fd

    def write(self, tree: TargetTree, parts: list[bytes], offset: int) -> bool:
        """Write chunks that follow one another in the file from `offset`, with one system call where
        it can; True when they were the file's last ones (then call finish)."""
        with self.lock:
            if self.fd is None:
                self.fd = self._open(tree)
                sized = self.remaining > 1 or self.entry.get("sparse")  # sized first: holes need it
                if sized and not self.piece:
                    os.ftruncate(self.fd, self.entry["size"])
            if self.entry.get("sparse"):
                for part in parts:
                    write_sparse(self.fd, part, offset)
                    offset += len(part)
            else:
                write_parts(self.fd, parts, offset)
            self.remaining -= len(parts)
            return self.remaining == 0

    def finish(self, tree: TargetTree) -> None:
        """Metadata on the open file, then the rename into place; a piece only closes its descriptor."""
        if self.fd is None:  # an empty file
            self.fd = self._open(tree)
        try:
            if not self.piece:
                metadata.apply_to_fd(self.fd, self.entry)
        finally:
            os.close(self.fd)
            self.fd = None
        if not self.piece:
            with tree.dir(self.parent) as dir_fd:
                tree.move_into_place(dir_fd, self.partial, self.name, self.path)
            self.created = False

    def discard(self, tree: TargetTree) -> None:
        with self.lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
        if self.created:  # a piece's file is its parent process's to remove
            with contextlib.suppress(OSError, RestoreTargetError), tree.dir(self.parent) as dir_fd:
                os.unlink(self.partial, dir_fd=dir_fd)
            self.created = False


def create_partial(dir_fd: int, name: str) -> int:
    """Create the partial file `name` (never an existing name, never through a link), mode 0600."""
    return os.open(
        name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
    )


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
        with self.ctx.sessions() as session:  # an archive reads its own (cold) copies: docs/ARCHIVE.md
            where = chunks.locate(session, wanted, tier_of(self.manifest.get("backup", {})))
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
        *,
        overwrite: bool = False,
    ) -> list[dict[str, str]]:
        """Write `entries` under `target` through directory descriptors only (app/restore/tree.py);
        with `overwrite`, what stands where the backup has another kind of entry is replaced, never
        followed. Returns the warnings (what could not be restored as it was)."""
        make_target(target)
        with TargetTree(str(target), replace=overwrite) as tree:
            files: list[dict[str, Any]] = []
            for e in entries:
                rel = safe_relpath(e["path"])
                if e["type"] == "dir":
                    with tree.dir(rel, create=True):
                        pass
                elif e["type"] == "file":
                    with tree.dir(split(rel)[0], create=True):
                        pass
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

                restore_files_in_processes(
                    self.ctx.handoff(), tree, files, where, tick, keep_partial, processes
                )
            else:
                restore_files(self.repo, tree, files, where, tick, keep_partial, threads)
            warnings: list[dict[str, str]] = []
            for e in entries:
                if e["type"] in SPECIAL_TYPES:
                    make_special(tree, e, warnings)
                elif e["type"] == "hardlink":
                    make_link(tree, e)  # shares its target's inode, so its metadata too
                elif e["type"] not in ENTRY_TYPES:
                    warnings.append(
                        {"path": e["path"], "warning": f"unknown entry type {e['type']!r} not restored"}
                    )
            for e in entries:
                if e["type"] == "symlink":
                    restore_symlink(tree, e)
            mark_finished(target)  # before the directories' metadata: the root's are the backup's
            for e in sorted(  # deepest first, the root (ROOT_PATH) last
                (e for e in entries if e["type"] == "dir"),
                key=lambda e: e["path"].count("/") if e["path"] != ROOT_PATH else -1,
                reverse=True,
            ):
                rel = safe_relpath(e["path"])
                try:
                    with tree.dir(rel) as fd:
                        metadata.apply_to_fd(fd, e)
                except OSError as exc:
                    fail(tree.root, rel, exc)
            return warnings


def restore_symlink(tree: TargetTree, entry: dict[str, Any]) -> None:
    """Make the link under a temporary name, give it its owner and mtime, rename it into place."""
    rel = safe_relpath(entry["path"])
    parent, name = split(rel)
    temp = partial_name(name)
    with tree.dir(parent, create=True) as dir_fd:
        try:
            os.symlink(entry["target"], temp, dir_fd=dir_fd)
            try:
                metadata.apply_to_link(dir_fd, temp, entry)
            except OSError:
                os.unlink(temp, dir_fd=dir_fd)
                raise
        except OSError as exc:
            fail(tree.root, rel, exc)
        tree.move_into_place(dir_fd, temp, name, rel)


def chunks_of(entry: dict[str, Any]) -> list[str]:
    """The chunks a file entry restores, or a piece of a big file (`piece`: {"first", "count",
    "offset"}, app/restore/procpool.py) its chunks first..first+count-1."""
    piece = entry.get("piece")
    ids: list[str] = entry["chunks"]
    return ids[piece["first"] : piece["first"] + piece["count"]] if piece else ids


def restore_files(
    repo: Repository,
    tree: TargetTree,
    entries: list[dict[str, Any]],
    where: dict[str, chunks.ChunkLocation],
    progress: Callable[[int], None],
    keep_partial: bool,
    threads: int,
) -> None:
    """Write the files `entries` into `tree` (their directories exist), reading each pack they need
    on `threads` threads; on failure, remove the partial files (unless `keep_partial`) and raise the
    first error (never a CancelledError of the packs not yet started)."""
    files: list[_FileState] = []
    # per pack: (offset in the pack, sealed length, plain length, chunk id, offset in the file, file)
    by_pack: dict[str, list[tuple[int, int, int, str, int, _FileState]]] = defaultdict(list)
    for e in entries:
        piece = e.get("piece")
        ids = chunks_of(e)
        state = _FileState(safe_relpath(e["path"]), e, len(ids), piece=piece is not None)
        files.append(state)
        offset = piece["offset"] if piece else 0
        for cid in ids:
            pack_id, pack_offset, length, raw_length = where[cid]
            by_pack[pack_id].append((pack_offset, length, raw_length, cid, offset, state))
            offset += raw_length

    def restore_pack(pack_id: str) -> None:
        items = sorted(by_pack[pack_id], key=_first)
        for start, end, group in coalesce(items, _span, gap=COALESCE_GAP, limit=MAX_READ):
            data = memoryview(repo.read_blob(pack_id, start, end - start))
            run: list[bytes] = []  # chunks that follow one another in one file, written at once
            run_state: _FileState | None = None
            run_start = run_end = run_bytes = 0
            last_cid, plain = "", b""
            for pack_offset, length, raw_length, cid, file_offset, state in group:
                if cid != last_cid:  # a chunk met twice in a row (zero pages) is opened once
                    blob = data[pack_offset - start : pack_offset - start + length]
                    try:
                        plain = repo.open_chunk(cid, blob, raw_length=raw_length)
                    except IntegrityError as exc:
                        raise IntegrityError(
                            f"cannot restore {state.entry['path']}: chunk {cid} in pack {pack_id} is corrupt",
                            detail=exc.message,
                            hint="restore the pack from a replica (secondary region)",
                        ) from None
                    last_cid = cid
                if run and (
                    state is not run_state
                    or file_offset != run_end
                    or len(run) >= WRITE_PARTS
                    or run_bytes >= WRITE_BYTES
                ):
                    assert run_state is not None
                    _write_run(tree, run_state, run, run_start, progress)
                    run = []
                if not run:
                    run_state, run_start, run_end, run_bytes = state, file_offset, file_offset, 0
                run.append(plain)
                run_end += len(plain)
                run_bytes += len(plain)
            if run:
                assert run_state is not None
                _write_run(tree, run_state, run, run_start, progress)

    try:
        for state in files:
            if state.remaining == 0:  # empty file
                try:
                    state.finish(tree)
                except OSError as err:
                    fail(tree.root, state.path, err)
        with ThreadPoolExecutor(threads, thread_name_prefix="restore") as pool:
            futures = [pool.submit(restore_pack, pid) for pid in by_pack]
            first_error: BaseException | None = None
            for future in futures:
                if future.cancelled():  # after a failure: never started
                    continue
                error = future.exception()
                if error is not None and first_error is None:
                    first_error = error
                    for other in futures:
                        other.cancel()
            if first_error is not None:
                raise first_error
    except BaseException:
        if not keep_partial:
            for state in files:
                state.discard(tree)
        raise


#: A run of chunks written with one pwritev: at most this many (IOV_MAX is 1024) and about this many bytes.
WRITE_PARTS = 256
WRITE_BYTES = 8 << 20


def _first(item: tuple[int, int, int, str, int, _FileState]) -> int:
    return item[0]


def _span(item: tuple[int, int, int, str, int, _FileState]) -> tuple[int, int]:
    return item[0], item[1]


def _write_run(
    tree: TargetTree, state: _FileState, run: list[bytes], offset: int, progress: Callable[[int], None]
) -> None:
    try:
        if state.write(tree, run, offset):
            state.finish(tree)
    except OSError as exc:
        fail(tree.root, state.path, exc)
    progress(sum(len(part) for part in run))


def write_parts(fd: int, parts: Sequence[bytes | memoryview], offset: int) -> None:
    """Write `parts` one after another from `offset` of `fd`: one pwritev, continued after a short write."""
    if len(parts) == 1:
        view = memoryview(parts[0])
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
        return
    total = sum(len(part) for part in parts)
    written = os.pwritev(fd, parts, offset)
    if written < total:  # rare (a signal, a full disk on its way): the rest, part by part
        rest = memoryview(b"".join(parts))[written:]
        write_parts(fd, [rest], offset + written)


def finish_big_file(tree: TargetTree, entry: dict[str, Any]) -> None:
    """Give a file restored in pieces its metadata and rename it into place."""
    rel = safe_relpath(entry["path"])
    parent, name = split(rel)
    with tree.dir(parent) as dir_fd:
        try:
            fd = os.open(entry["partial"], os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                metadata.apply_to_fd(fd, entry)
            finally:
                os.close(fd)
        except OSError as exc:
            fail(tree.root, rel, exc)
        tree.move_into_place(dir_fd, entry["partial"], name, rel)


@registered_reader("restore")
def restore_backup(
    ctx: Context,
    selector: str,
    target: Path,
    *,
    source: str | None = None,
    paths: list[str] | None = None,
    dry_run: bool = False,
    overwrite: bool = False,
    skip_existing: bool = False,
    keep_partial: bool = False,
    progress: Callable[[int, int], None] | None = None,
    actor: str | None = None,
    request_only: bool = False,
) -> RestorePlan:
    """Restore `selector` (a backup id or `latest` of `source`) into `target`. Every refusal (an
    unsafe or non-empty target, an entry of another kind in the way) is decided before anything is
    written, and a dry run makes the same ones. A non-empty target needs `overwrite` (replace what
    the backup holds) or `skip_existing` (restore only what is missing); docs/RESTORE.md. An archive in
    GLACIER or DEEP_ARCHIVE has its packs thawed first (docs/ARCHIVE.md); `request_only` requests the
    thaw and returns, writing nothing. Registered as a running reader while it runs (garbage collection
    keeps the packs it may have located: docs/GC.md)."""
    from app.catalog.sources import get_source

    if overwrite and skip_existing:
        raise ConfigurationError(
            "--overwrite and --skip-existing exclude each other",
            hint="--overwrite replaces what the target holds, --skip-existing leaves it; pick one",
        )
    with ctx.sessions() as session:
        source_id = get_source(session, source).id if source else None
        backup = resolve(session, selector, source_id)
        from app.catalog.models import Source

        src = session.get(Source, backup.source_id)
        source_name = src.name if src else "?"
        fate = backup_regions.state_in(session, backup.id, ctx.region) if ctx.region else None
    if fate is not None and fate.state == backup_regions.DELETED:
        raise RestoreTargetError(
            f"backup {backup.id} was deleted in region {ctx.region} by that region's retention policy",
            hint="restore it from the primary (without --from-region) or from another region that keeps it",
        )
    only_in_region = fate is not None and fate.state == backup_regions.KEPT
    if backup.state not in ("complete", "partial") and not only_in_region:
        raise RestoreTargetError(
            f"backup {backup.id} is {backup.state}, not restorable",
            hint="pick a complete backup from `equisplit-dr backup list`"
            + (
                ""
                if ctx.region
                else "; `retention plan --json` names the regions still keeping a deleted one"
            ),
        )
    target = target.expanduser().resolve()
    wanted = normalise_selection(paths)
    identity = restore_identity(backup.id, wanted)
    # the same restore left unfinished (a failure, a lost worker) resumes, replacing what it wrote
    resuming = resumes(target, identity, allow_existing=overwrite or skip_existing)
    occupied = check_target(target, allow_existing=overwrite or skip_existing or resuming)
    manifest = ctx.repository.read_manifest(backup.id, cached=True)  # root from storage, entries cached
    entries = _select(manifest, wanted)
    existing: dict[str, str] = {}
    if occupied:
        existing = scan(target, entries, replace=overwrite or resuming)
        if skip_existing:
            entries = [e for e in entries if e["path"] not in existing]
    restorer = Restorer(ctx, backup, source_name, manifest)
    plan, where = _located(restorer, entries)
    there = len(existing.keys() - {ROOT_PATH})  # the target itself is not counted
    plan.skipped = there if skip_existing else 0
    plan.replaced = there if overwrite else 0
    if dry_run:
        check_packs(ctx, entries, where)
        return plan
    # Cold packs in a class that must be thawed: requested and waited for before the target is touched.
    thawed = thaw_for_backup(
        ctx.storage,
        ctx.settings,
        manifest["backup"],
        {loc.pack_id for loc in where.values()},
        request_only=request_only,
    )
    plan.thaw = thawed.to_json() if thawed else None
    if request_only:
        return plan
    # Worker processes for a big restore (docs/BACKUP.md, "Using every core"); the fork server starts
    # now, so its imports overlap the job row and the directories.
    processes = forkserver.processes_for(ctx.settings)
    if plan.bytes < ctx.settings.backup_processes_min_bytes or plan.files < 2:
        processes = 1
    if ctx.storage.capabilities.remote and not ctx.settings.backup_processes:
        # Each read a request (S3): one process reads every pack once, grouped by pack; shares of files
        # in several processes read packs two or three times over and cost ~40 % more CPU (docs/BACKUP.md).
        processes = 1
    if processes > 1:
        forkserver.warm_up(ctx.storage_url)
    plan.processes = processes
    if resuming:
        remove_partials(target)  # the unfinished run's files in progress, under names of their own
    mark_unfinished(target, identity)
    with transaction(ctx.sessions) as session:
        job_id = jobs.start_job(session, "restore", source_id=backup.source_id, backup_id=backup.id).id
        # Initiated, not only executed: a restore that dies half-way leaves its start in the trail.
        detail = {
            "job": job_id,
            "target": str(target),
            "files": plan.files,
            "bytes": plan.bytes,
            "paths": wanted,
        }
        audit.append(session, "restore.started", backup.id, detail, actor)
    try:
        try:
            plan.warnings = restorer.run(
                target,
                entries,
                where,
                progress,
                keep_partial,
                ctx.settings.worker_threads,
                processes,
                overwrite=overwrite or resuming,
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


def _located(
    restorer: Restorer, entries: list[dict[str, Any]]
) -> tuple[RestorePlan, dict[str, chunks.ChunkLocation]]:
    plan, where = restorer.plan(entries)
    if plan.missing_chunks:
        raise ObjectNotFoundError(
            "chunk",
            plan.missing_chunks[0],
            "the catalog's chunk index",
            hint=f"{len(plan.missing_chunks)} chunk(s) unknown; run `equisplit-dr catalog rebuild`",
        )
    return plan, where


def check_backup_data(ctx: Context, backup_id: str) -> RestorePlan:
    """The data half of a dry run, for callers that check their target themselves (a PITR recovery):
    the manifest reads, the catalog locates every chunk, every pack is in storage at its size."""
    with ctx.sessions() as session:
        backup = resolve(session, backup_id, None)
    manifest = ctx.repository.read_manifest(backup.id)
    restorer = Restorer(ctx, backup, "?", manifest)  # its header says the tier of its chunks
    entries = _select(manifest, None)
    plan, where = _located(restorer, entries)
    check_packs(ctx, entries, where)
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
