"""Restore a backup (or some of its paths) into a directory, reading packs in parallel."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
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
    ObjectNotFoundError,
    RestoreTargetError,
)
from app.repo.format import tier_of
from app.restore import metadata
from app.restore.files import restore_files
from app.restore.nodes import check_links, detach_links, make_link, make_special
from app.restore.preflight import check_packs
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
from app.restore.worker import WorkerHandoff
from app.sources.files import ENTRY_TYPES, ROOT_PATH, SPECIAL_TYPES


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

    def _worker_handoff(self) -> WorkerHandoff:
        return WorkerHandoff(
            self.ctx.storage_url, self.ctx.master_key(), self.repo.keyring_blob, self.repo.config
        )

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
            made: set[str] = set()  # directories made (or found) here, each looked up once
            for e in entries:
                rel = safe_relpath(e["path"])
                kind = e["type"]
                if kind in ("dir", "file"):
                    folder = rel if kind == "dir" else split(rel)[0]
                    if folder not in made:
                        with tree.dir(folder, create=True):
                            made.add(folder)
                    if kind == "file":
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
                    self._worker_handoff(),
                    tree,
                    files,
                    where,
                    tick,
                    keep_partial,
                    processes,
                    _threads_per_process(self.ctx, threads, processes),
                )
            else:
                writers = _threads_per_process(self.ctx, threads, 1)
                restore_files(self.repo, tree, files, where, tick, keep_partial, writers)
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
    # Worker processes for a big restore (docs/BACKUP.md, "Using every core"): the fork server starts
    # now, so its imports overlap the target scan, the chunks' lookup, the job row and the directories.
    processes = 1 if dry_run or request_only else _worker_processes(ctx, entries)
    warmed = processes > 1
    if warmed:
        forkserver.warm_up(ctx.storage_url, forkserver.RESTORE_PRELOAD)
    try:
        existing: dict[str, str] = {}
        if occupied:
            existing = scan(target, entries, replace=overwrite or resuming)
            if skip_existing:
                entries = [e for e in entries if e["path"] not in existing]
                processes = min(processes, _worker_processes(ctx, entries))
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
    except BaseException:
        if warmed:
            forkserver.stop_server(used=False)  # never forked a worker: killed, not waited for
        raise
    if warmed and processes == 1:  # started for more than --skip-existing left to restore
        forkserver.stop_server(used=False)
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


def _worker_processes(ctx: Context, entries: list[dict[str, Any]]) -> int:
    """How many worker processes write these entries' files: one per core (forkserver.processes_for)
    for BACKUP_PROCESSES_MIN_BYTES or more in two files or more, else 1; 1 on remote storage unless
    BACKUP_PROCESSES is set (each read a request: one process reads each pack once, grouped by pack;
    shares of files in several processes read packs two or three times over and cost ~40 % more CPU,
    docs/BACKUP.md)."""
    files = [e for e in entries if e["type"] == "file"]
    if len(files) < 2 or sum(e.get("size", 0) for e in files) < ctx.settings.backup_processes_min_bytes:
        return 1
    if ctx.storage.capabilities.remote and not ctx.settings.backup_processes:
        return 1
    return forkserver.processes_for(ctx.settings)


def _threads_per_process(ctx: Context, threads: int, processes: int) -> int:
    """A writing process's threads: BACKUP_THREADS shared out on remote storage, where a thread waits
    for each request; 1 on local storage, where a thread mostly runs Python (the others wait for its
    lock), and threads creating files in one directory at once spin on its lock in the kernel. Measured
    on 12,075 files (319 MB), a shared 2-core machine: os.open 5.0 CPU-s on 4 threads, 0.3 on one; the
    restore on 2 processes 4.7-5.5 CPU-s with one thread each, 5.7-9.4 with two."""
    return max(1, threads // processes) if ctx.storage.capabilities.remote else 1


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
