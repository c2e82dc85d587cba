"""The beat schedule, from app.scheduling's policy entries, and beat's scheduler, which writes into
each scheduled backup's message the firing it serves."""

from __future__ import annotations

import copy
from typing import Any

from celery.beat import PersistentScheduler
from celery.schedules import crontab, schedule

from app import clock
from app.scheduling import ScheduleEntry, build_schedule, tick_of
from app.settings import load_settings
from workers.app import app

#: Tasks whose message carries the tick (`tick=` the cron firing, ISO minute in SCHEDULE_TIMEZONE).
TICKED_TASKS = frozenset({"tasks.backup.scheduled_backups"})


def to_celery(entry: ScheduleEntry) -> Any:
    if entry.every is not None:
        return schedule(run_every=entry.every)
    assert entry.cron is not None
    minute, hour, day_of_month, month, day_of_week = entry.cron.split()
    return crontab(
        minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month, day_of_week=day_of_week
    )


class BeatScheduler(PersistentScheduler):  # type: ignore[misc]
    """Celery's persistent scheduler, plus: a scheduled backup's message says which firing it serves,
    computed here from beat's own rules. Workers claim that firing as sent, so a worker whose settings
    differ from beat's never maps a tick onto another one (and drops it as already claimed)."""

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        if entry.task in TICKED_TASKS:
            entry = copy.copy(entry)  # the stored entry keeps its own kwargs
            tick = tick_of(load_settings(), entry.name, clock.now())
            entry.kwargs = {**(entry.kwargs or {}), "tick": tick}
        return super().apply_async(entry, producer, advance, **kwargs)


app.conf.beat_scheduler = "workers.schedule:BeatScheduler"
app.conf.beat_schedule = {
    e.name: {"task": e.task, "schedule": to_celery(e), "args": e.args, "options": {"queue": e.queue}}
    for e in build_schedule(load_settings())
}
