"""One backup's units on every core of this machine: a pool of worker processes (app/forkserver.py),
each running whole units exactly as a cluster worker does (`run_unit` with its own writer: its packs
are durable and indexed before its result is written), so the local engine and the cluster share one
data path. The parent keeps the source's lease, the PostgreSQL session (if any) and the job.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from app import forkserver
from app.backup.claims import SharedClaims
from app.backup.unit import UnitOutcome, run_unit
from app.context import Context, Handoff

_worker_ctx: Context | None = None
_worker_counter: Synchronized[int] | None = None
_worker_claims: SharedClaims | None = None


def _init_worker(handoff: Handoff, counter: Synchronized[int], claims: SharedClaims, parent: int) -> None:
    global _worker_ctx, _worker_counter, _worker_claims
    forkserver.init_worker(parent)
    _worker_ctx = Context.from_handoff(handoff)
    _worker_counter = counter
    _worker_claims = claims


def _run_unit(backup_id: str, number: int, input_doc: dict[str, Any] | None) -> UnitOutcome:
    assert _worker_ctx is not None and _worker_counter is not None and _worker_claims is not None
    progress = forkserver.Progress(_worker_counter)
    try:
        return run_unit(
            _worker_ctx,
            backup_id,
            number,
            progress=progress.add,
            claim=_worker_claims.claim,
            input_doc=input_doc,
            keep_result=input_doc is not None,
        )
    finally:
        progress.flush()


class UnitPool:
    """Worker processes for the units of one backup; a context manager."""

    def __init__(
        self, handoff: Handoff, processes: int, threads_per_process: int, expected_chunks: int
    ) -> None:
        mp = forkserver.context(handoff.storage_url)
        self._counter: Synchronized[int] = mp.Value("q", 0)
        claims = SharedClaims(mp, expected_chunks)
        settings = handoff.settings.model_copy(update={"backup_threads": threads_per_process})
        self._executor = ProcessPoolExecutor(
            processes,
            mp_context=mp,
            initializer=_init_worker,
            initargs=(dataclasses.replace(handoff, settings=settings), self._counter, claims, os.getpid()),
        )

    def __enter__(self) -> UnitPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def run(
        self,
        backup_id: str,
        units: Sequence[tuple[int, int]],
        progress: Callable[[int], None] | None = None,
        *,
        inputs: dict[int, dict[str, Any]] | None = None,
    ) -> list[UnitOutcome]:
        """Run `units` ((number, bytes) pairs), biggest first so the last to finish is a small one;
        the first failure cancels what has not started and is raised once the running ones end. With
        `inputs` (each unit's input, by number) a unit goes to its process with its input and hands its
        result back, nothing through storage; `inputs` is emptied as they are sent."""
        order = sorted(units, key=lambda u: -u[1])
        futures: list[Future[UnitOutcome]] = [
            self._executor.submit(_run_unit, backup_id, number, inputs.pop(number) if inputs else None)
            for number, _ in order
        ]
        return forkserver.wait_all(futures, self._counter, progress)
