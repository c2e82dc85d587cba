"""The base of every task: a catalog/storage context per worker process, Sentry tags, and the mapping
of domain errors to retry (transient) or failure (everything else)."""

from __future__ import annotations

import gc
import logging
import os
import threading
from typing import Any

from celery import Task
from sqlalchemy.exc import OperationalError

from app.context import Context
from app.errors import ObjectNotFoundError, StorageError
from app.settings import load_settings

_context: Context | None = None
_context_pid: int | None = None
_warming: threading.Thread | None = None
#: How long a task waits for its process's warm-up to finish before it opens what it needs itself.
WARM_UP_WAIT = 10.0
log = logging.getLogger(__name__)

#: Retries of a task that met a transient failure (catalog unreachable, storage hiccup): exponential
#: backoff from 1 s, capped, so a database restart of a minute loses no job.
MAX_RETRIES = 8
BACKOFF_CAP = 60


def process_context() -> Context:
    """One Context per process: engines and connections are never shared across a fork."""
    global _context, _context_pid
    if _context is None or _context_pid != os.getpid():
        _context = Context(load_settings())
        _context.process = "worker"  # its configuration is audited when it opens the catalog
        _context_pid = os.getpid()
    return _context


def warm_up() -> None:
    """Open this process's catalog connection and storage client on a background thread, while the process
    waits for its first task: a unit then costs the same on a fresh worker as on a busy one. In a
    thread, so a catalog that is unreachable now never delays the process's start (Celery kills a
    child not up within `worker_proc_alive_timeout`); a failure is left for the first task to meet."""
    global _warming
    ctx = process_context()

    def run() -> None:
        try:
            ctx.storage  # noqa: B018 - the storage client
            import pyfastcdc  # noqa: F401 - the chunker, imported by a unit's first file
            import sentry_sdk  # noqa: F401 - imported by every task's first call (its tags), ~0.1 s

            from app.backup.unit import prepare_process

            prepare_process(ctx)  # the engine, the migration check, a pooled connection, compiled SQL
        except Exception as exc:  # the first task opens them itself and meets the error there
            log.info("warm-up of the catalog and storage failed: %s", exc.__class__.__name__)
        finally:
            tune_collector()

    _warming = threading.Thread(target=run, name="warm-up", daemon=True)
    _warming.start()


#: The collector's thresholds in a worker process, as in the CLI (app/cli/entry.py): young collections
#: less often (a unit builds thousands of entries that live to its end).
GC_THRESHOLD = (50_000, 20, 100)


def tune_collector() -> None:
    """Freeze what a worker process holds for its life (imports, the catalog engine, the storage client,
    ~160,000 objects) out of the collector's sight, as the CLI does with its imports: unfrozen, every full
    collection re-scanned them, 80-130 ms each, one every other unit of small files, paid inside the
    unit or between its end and its result (bench/cluster_bench.py: post, docs/CLUSTER.md)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, ObjectNotFoundError):
        return False
    return isinstance(exc, StorageError) and getattr(exc, "transient", True)


class EquisplitTask(Task):  # type: ignore[misc]
    """Tasks receive ids and names only; `self.ctx` is this process's Context."""

    acks_late = True
    reject_on_worker_lost = True

    @property
    def ctx(self) -> Context:
        if _warming is not None:  # at once when it is done
            _warming.join(WARM_UP_WAIT)
        return process_context()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _tag_sentry(self.name, self.request.delivery_info or {}, kwargs, args)
        try:
            if not self.request.is_eager:
                _refresh_keys(self.ctx)
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            if is_transient(exc) and not self.request.is_eager and self.request.retries < MAX_RETRIES:
                countdown = min(BACKOFF_CAP, 2**self.request.retries)
                raise self.retry(exc=exc, countdown=countdown, max_retries=MAX_RETRIES) from exc
            raise


def _refresh_keys(ctx: Context) -> None:
    """Adopt a keyring a rotation replaced since the last task, so this one seals with the new data key
    (docs/KEYS.md). Storage that fails here is left for the task to meet, if it needs storage at all;
    a keyring this process cannot open fails the task."""
    try:
        ctx.refresh_keys()
    except StorageError as exc:
        log.warning("re-reading the keyring failed: %s", exc.message)


def _tag_sentry(name: str, delivery: dict[str, Any], kwargs: dict[str, Any], args: tuple[Any, ...]) -> None:
    try:
        import sentry_sdk
    except ImportError:  # pragma: no cover - sentry-sdk is a dependency
        return
    scope = sentry_sdk.get_current_scope()
    scope.set_tag("task", name)
    scope.set_tag("queue", delivery.get("routing_key") or "")
    for key in ("source", "backup_id", "job_id"):
        if key in kwargs:
            scope.set_tag(key.replace("_id", ""), str(kwargs[key]))
    if args and isinstance(args[0], str) and name.startswith("tasks.backup."):
        scope.set_tag("source" if name.endswith("run_backup") else "backup", args[0])
