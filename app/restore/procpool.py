"""A restore's files on every core of this machine: worker processes (app/forkserver.py) each write a
share of the files, while this process made the directories and does symlinks and directory metadata
last. Files are shared out in pack order, in contiguous runs of about equal bytes, so each pack is
mostly read by one process."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from app import forkserver
from app.catalog.chunks import ChunkLocation
from app.context import Context
from app.restore.engine import restore_files
from app.settings import Settings

_worker_ctx: Context | None = None
_worker_counter: Synchronized[int] | None = None


def _init_worker(settings: Settings, counter: Synchronized[int], parent: int) -> None:
    global _worker_ctx, _worker_counter
    forkserver.init_worker(parent)
    _worker_ctx = Context(settings)
    _worker_counter = counter


def _restore_share(
    root: str,
    entries: list[dict[str, Any]],
    where: dict[str, ChunkLocation],
    keep_partial: bool,
    threads: int,
) -> int:
    assert _worker_ctx is not None and _worker_counter is not None
    progress = forkserver.Progress(_worker_counter)
    try:
        restore_files(_worker_ctx.repository, root, entries, where, progress.add, keep_partial, threads)
    finally:
        progress.flush()
    return len(entries)


def shares(
    files: list[dict[str, Any]], where: dict[str, ChunkLocation], count: int
) -> list[list[dict[str, Any]]]:
    """`files` in order of their first chunk's place (pack, offset), cut into `count` runs of about
    equal bytes; empty files go with the first run."""

    def place(e: dict[str, Any]) -> tuple[str, int]:
        if not e["chunks"]:
            return ("", 0)
        loc = where[e["chunks"][0]]
        return (loc.pack_id, loc.offset)

    ordered = sorted(files, key=place)
    total = sum(e["size"] for e in ordered)
    runs: list[list[dict[str, Any]]] = [[] for _ in range(count)]
    done, run = 0, 0
    for e in ordered:
        if run < count - 1 and done >= total * (run + 1) / count:
            run += 1
        runs[run].append(e)
        done += e["size"]
    return [r for r in runs if r]


def restore_files_in_processes(
    settings: Settings,
    root: str,
    files: list[dict[str, Any]],
    where: dict[str, ChunkLocation],
    progress: Callable[[int], None],
    keep_partial: bool,
    processes: int,
) -> None:
    mp = forkserver.context()
    counter: Synchronized[int] = mp.Value("q", 0)
    runs = shares(files, where, processes * 2)
    threads = max(1, settings.worker_threads // processes)
    with ProcessPoolExecutor(
        processes, mp_context=mp, initializer=_init_worker, initargs=(settings, counter, os.getpid())
    ) as pool:
        futures = []
        for run in runs:
            chunk_ids = {c for e in run for c in e["chunks"]}
            futures.append(
                pool.submit(
                    _restore_share, root, run, {c: where[c] for c in chunk_ids}, keep_partial, threads
                )
            )
        forkserver.wait_all(futures, counter, progress)
