"""Writing a restore's entries into its target: directories first, then the files (in this process,
app/restore/files.py, or on worker processes, app/restore/procpool.py), special files and hard links,
symlinks, and last the directories' metadata, deepest first. Everything goes through directory
descriptors (app/restore/tree.py): no link is followed that the restore did not create."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.restore import metadata
from app.restore.files import restore_files
from app.restore.nodes import make_link, make_special
from app.restore.plan import threads_per_process
from app.restore.target import make_target, mark_finished, safe_relpath
from app.restore.tree import TargetTree, fail, partial_name, split
from app.restore.worker import WorkerHandoff
from app.sources.files import ENTRY_TYPES, ROOT_PATH, SPECIAL_TYPES

if TYPE_CHECKING:
    from app.catalog.chunks import ChunkLocation
    from app.context import Context


def write_entries(
    ctx: Context,
    target: Path,
    entries: list[dict[str, Any]],
    where: dict[str, ChunkLocation],
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

            repo = ctx.repository
            restore_files_in_processes(
                WorkerHandoff(ctx.storage_url, ctx.master_key(), repo.keyring_blob, repo.config),
                tree,
                files,
                where,
                tick,
                keep_partial,
                processes,
                threads_per_process(ctx, threads, processes),
            )
        else:
            writers = threads_per_process(ctx, threads, 1)
            restore_files(ctx.repository, tree, files, where, tick, keep_partial, writers)
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
