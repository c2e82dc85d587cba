"""A restore's files on every core of this machine: worker processes (app/forkserver.py) each write a
share of the files, while this process made the directories and does symlinks and directory metadata
last. Files are shared out in pack order, in contiguous runs of about equal work (bytes plus a cost
per file), so each pack is mostly read by one process."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from app import forkserver
from app.catalog.chunks import ChunkLocation
from app.errors import RestoreTargetError
from app.restore.files import chunks_of, create_partial, finish_big_file
from app.restore.target import safe_relpath
from app.restore.tree import TargetTree, fail, partial_name, split
from app.restore.worker import WorkerHandoff, init_worker, restore_share

#: A file bigger than this is shared out in pieces (runs of its chunks), so one big file (a database's
#: relation segment) is written by every process at once.
PIECE_BYTES = 32 << 20


#: What writing one file costs beyond its bytes, in bytes (create, close, mode, owner and times), taken
#: to be what reading one costs in a backup (app/backup/plan.py: ITEM_COST_BYTES). With runs of equal
#: bytes, the process that got the small files worked twice as long as the other.
FILE_COST_BYTES = 16 << 10
#: Runs per process: a process that finishes early takes another run instead of waiting.
RUNS_PER_PROCESS = 4


def _weight(e: dict[str, Any]) -> int:
    piece = e.get("piece")
    return int(piece["bytes"]) if piece else int(e["size"]) + FILE_COST_BYTES


def split_big(
    files: list[dict[str, Any]], where: dict[str, ChunkLocation], piece_bytes: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the work items, the big files): a file over `piece_bytes` becomes pieces of whole chunks."""
    limit = piece_bytes or PIECE_BYTES
    items: list[dict[str, Any]] = []
    big: list[dict[str, Any]] = []
    for e in files:
        if e["size"] <= limit:
            items.append(e)
            continue
        big.append(e)
        first = offset = size = 0
        for index, cid in enumerate(e["chunks"]):
            size += where[cid].raw_length
            if size >= limit or index == len(e["chunks"]) - 1:
                count = index + 1 - first
                items.append(
                    {**e, "piece": {"first": first, "count": count, "offset": offset, "bytes": size}}
                )
                first, offset, size = index + 1, offset + size, 0
    return items, big


def shares(
    items: list[dict[str, Any]], where: dict[str, ChunkLocation], count: int
) -> list[list[dict[str, Any]]]:
    """`items` (files and pieces) in order of their first chunk's place (pack, offset), cut into `count`
    runs of about equal work (bytes, and a fixed cost per file); empty files go with the first run."""

    def place(e: dict[str, Any]) -> tuple[str, int]:
        first = e["piece"]["first"] if "piece" in e else 0
        if not e["chunks"]:
            return ("", 0)
        loc = where[e["chunks"][first]]
        return (loc.pack_id, loc.offset)

    ordered = sorted(items, key=place)
    total = sum(_weight(e) for e in ordered)
    runs: list[list[dict[str, Any]]] = [[] for _ in range(count)]
    done, run = 0, 0
    for e in ordered:
        if run < count - 1 and done >= total * (run + 1) / count:
            run += 1
        runs[run].append(e)
        done += _weight(e)
    return [r for r in runs if r]


def restore_files_in_processes(
    handoff: WorkerHandoff,
    tree: TargetTree,
    files: list[dict[str, Any]],
    where: dict[str, ChunkLocation],
    progress: Callable[[int], None],
    keep_partial: bool,
    processes: int,
    threads: int,
) -> None:
    """Write `files` on `processes` worker processes of `threads` threads each (app/restore/worker.py),
    big files in pieces; on failure, the big files' partial files are removed unless `keep_partial`."""
    mp = forkserver.context(handoff.storage_url, forkserver.RESTORE_PRELOAD)
    counter: Synchronized[int] = mp.Value("q", 0)
    items, big = split_big(files, where)
    partials = {e["path"]: partial_name(split(e["path"])[1]) for e in big}
    items = [{**e, "partial": partials[e["path"]]} if "piece" in e else e for e in items]
    big = [{**e, "partial": partials[e["path"]]} for e in big]
    made: list[dict[str, Any]] = []
    try:
        for e in big:  # the pieces' processes write into these
            rel = safe_relpath(e["path"])
            with tree.dir(split(rel)[0]) as dir_fd:
                try:
                    fd = create_partial(dir_fd, e["partial"])
                    made.append(e)
                    try:
                        os.ftruncate(fd, e["size"])
                    finally:
                        os.close(fd)
                except OSError as exc:
                    fail(tree.root, rel, exc)
        runs = shares(items, where, processes * RUNS_PER_PROCESS)
        with ProcessPoolExecutor(
            processes, mp_context=mp, initializer=init_worker, initargs=(handoff, counter, os.getpid())
        ) as pool:
            futures = []
            for run in runs:
                located = {c: where[c][:] for e in run for c in chunks_of(e)}  # plain tuples (files.Located)
                futures.append(
                    pool.submit(restore_share, tree.root, tree.replace, run, located, keep_partial, threads)
                )
            forkserver.wait_all(futures, counter, progress)
    except BaseException:
        if not keep_partial:
            for e in made:
                with (
                    contextlib.suppress(OSError, RestoreTargetError),
                    tree.dir(split(e["path"])[0]) as dir_fd,
                ):
                    os.unlink(e["partial"], dir_fd=dir_fd)
        raise
    for e in big:
        finish_big_file(tree, e)
