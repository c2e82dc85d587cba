"""Monitoring tasks (queue `monitor`): the health check, which also opens, escalates and resolves the
alert incidents and delivers their messages, and the job reaper."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from app.alerts.incidents import evaluate_alerts
from app.monitoring.reaper import reap_stale_jobs


@shared_task(bind=True, name="tasks.monitor.health_check")
def health_check(self: Any) -> dict[str, Any]:
    return evaluate_alerts(self.ctx).to_json()


@shared_task(bind=True, name="tasks.monitor.reap_jobs")
def reap_jobs(self: Any) -> list[str]:
    return reap_stale_jobs(self.ctx)
