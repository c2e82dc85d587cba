"""Backup tasks. A backup is three steps: `run_backup` plans it (queue `backup`), one `backup_unit` per
unit reads files (queue `chunks`, or the source's own queue so only workers that can read its files
take them), and `finalize_backup` writes the manifest. `export_database` is a logical export (pg_dump)
of one database, whole in one task. Arguments and results are ids and names."""

from __future__ import annotations

from typing import Any

from celery import chord, group, shared_task
from celery.result import allow_join_result

from app import clock
from app.backup.engine import run_backup as run_in_process
from app.backup.engine import runs_in_one_process
from app.backup.failure import fail_for_step, fail_for_unit, skip_backup
from app.backup.finalize import finalize_backup as finalize
from app.backup.prepare import prepare_backup
from app.backup.unit import run_unit
from app.catalog import schedule_claims
from app.catalog.sources import list_sources
from app.errors import LockedError
from app.logical.export import export_database as export_in_process
from app.scheduling import tick_of
from tasks.replicate import after_backup


def _summary(result: Any) -> dict[str, Any]:
    return {
        "job_id": result.job_id,
        "backup_id": result.id,
        "source": result.source,
        "type": result.type,
        "state": result.state,
        "bytes_read": result.stats["bytes_read"],
        "bytes_stored": result.stats["bytes_stored"],
        "errors": len(result.errors),
        "warnings": len(result.warnings),
    }


@shared_task(bind=True, name="tasks.backup.run_backup")
def run_backup(
    self: Any, source: str, backup_type: str, scheduled: bool = False, allow_shrink: bool = False
) -> Any:
    """Plan the backup, then become the chord of its units and its finalize step. The AsyncResult of
    this task resolves to the finished backup's summary (job id, backup id, state, sizes). A scheduled
    tick that finds the source's previous backup still running is skipped, not failed. `allow_shrink`
    confirms a source that shrank since its last complete backup (else the state is `partial`). A PostgreSQL
    source is backed up whole in this task: its session must outlive every unit (docs/POSTGRES.md)."""
    try:
        if runs_in_one_process(self.ctx, source):
            summary = _summary(
                run_in_process(self.ctx, source, backup_type, actor="celery", allow_shrink=allow_shrink)
            )
            after_backup(self)
            return summary
        prepared = prepare_backup(
            self.ctx, source, backup_type, cluster=True, task_id=self.request.id, allow_shrink=allow_shrink
        )
    except LockedError as exc:
        if not scheduled:
            raise
        job_id = skip_backup(self.ctx, source, backup_type, exc.message)
        return {"job_id": job_id, "source": source, "type": backup_type, "state": "skipped", "reason": exc.message}
    # The errback hangs on the body: a unit that fails for good fails the body with a ChordError.
    finish = finalize_backup.si(prepared.backup_id).set(queue="backup")
    finish.link_error(backup_failed.s(prepared.backup_id).set(queue="backup"))
    if not prepared.units:
        return finalize_backup.run(prepared.backup_id)
    units = group(backup_unit.si(prepared.backup_id, n).set(queue=prepared.queue) for n in prepared.units)
    flow = chord(units, finish)
    if self.request.is_eager:  # embedded mode (no broker): run the same chord in this process
        with allow_join_result():
            return flow.apply().get()
    raise self.replace(flow)


@shared_task(bind=True, name="tasks.backup.export_database")
def export_database(self: Any, source: str, database: str | None = None) -> dict[str, Any]:
    """A logical export (pg_dump) of one database of a PostgreSQL source, whole in this task (the dump
    streams from one process); the summary of the finished backup, of type `logical`."""
    summary = _summary(export_in_process(self.ctx, source, database, actor="celery"))
    after_backup(self)
    return summary


def _unit_failed(task: Any, exc: BaseException, _task_id: str, args: Any, kwargs: Any, _einfo: Any) -> None:
    """Celery's on_failure of a unit (called once it failed for good, never before a retry): the
    backup fails now with the unit's error; the chord would call backup_failed only once every other
    unit has come back."""
    backup_id, number = ([*args, None, None])[:2]
    backup_id, number = kwargs.get("backup_id", backup_id), kwargs.get("number", number)
    if backup_id is not None:
        fail_for_unit(task.ctx, str(backup_id), int(number or 0), exc, actor="celery")


# track_started off: a unit's STARTED state would cost a result-backend write per unit, and nothing reads
# it (Flower and bench/cluster_bench.py see task-started events; the catalog's backup_units row says
# running); run_backup and finalize_backup keep it.
@shared_task(bind=True, name="tasks.backup.backup_unit", on_failure=_unit_failed, track_started=False)
def backup_unit(self: Any, backup_id: str, number: int) -> dict[str, Any]:
    # the node name (`-n backup@%h`), as Flower and `celery inspect` show the worker
    outcome = run_unit(self.ctx, backup_id, number, cluster=True, worker=self.request.hostname)
    return {
        "backup_id": backup_id,
        "unit": number,
        "worker": outcome.worker,
        "seconds": round(outcome.seconds, 3),
        "bytes_read": outcome.bytes_read,
        "skipped": outcome.skipped,
    }


@shared_task(bind=True, name="tasks.backup.finalize_backup")
def finalize_backup(self: Any, backup_id: str) -> dict[str, Any]:
    summary = _summary(finalize(self.ctx, backup_id, actor="celery"))
    after_backup(self)
    return summary


@shared_task(name="tasks.backup.backup_failed")
def backup_failed(request: Any, exc: Any, traceback: Any, backup_id: str) -> None:
    """Errback of the chord: any unit or the finalize step failed for good. Not bound (no `self`):
    Celery calls an errback with (request, exc, traceback) only when its signature has more than one
    argument left and it is not a bound task; a bound one is sent as a task with the failed task's id
    alone, which left the backup running (a TypeError in the errback)."""
    fail_for_step(backup_failed.ctx, backup_id, exc if isinstance(exc, BaseException) else None, actor="celery")


@shared_task(bind=True, name="tasks.backup.scheduled_backups")
def scheduled_backups(self: Any, backup_type: str, tick: str | None = None) -> list[str]:
    """Beat's tick: one backup of every source (files and PostgreSQL), once per tick however many beats
    emitted it. `tick` is the firing beat serves, written into the message by beat
    (workers/schedule.py); a message without one (sent by hand, or by an older beat) is placed by this
    worker's own rules."""
    if tick is None:
        tick = tick_of(self.ctx.settings, f"backup-{backup_type}", clock.now())
    started = []
    with self.ctx.sessions() as session:
        names = [s.name for s in list_sources(session)]
    for name in names:
        if schedule_claims.claim(self.ctx.sessions, f"backup:{backup_type}:{name}", tick):
            run_backup.delay(name, backup_type, scheduled=True)
            started.append(name)
    return started
