"""The beat schedule, from app.scheduling's policy entries."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab, schedule

from app.scheduling import ScheduleEntry, build_schedule
from app.settings import load_settings
from workers.app import app


def to_celery(entry: ScheduleEntry) -> Any:
    if entry.every is not None:
        return schedule(run_every=entry.every)
    assert entry.cron is not None
    minute, hour, day_of_month, month, day_of_week = entry.cron.split()
    return crontab(
        minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month, day_of_week=day_of_week
    )


app.conf.beat_schedule = {
    e.name: {"task": e.task, "schedule": to_celery(e), "args": e.args, "options": {"queue": e.queue}}
    for e in build_schedule(load_settings())
}
