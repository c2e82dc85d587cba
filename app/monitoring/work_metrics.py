"""Metrics of the work in flight: the broker's queue depths (LLEN on a Redis broker), the jobs of the
last 24 hours and their durations, and the open alert incidents."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import func, select

from app import clock
from app.catalog.models import Incident, Job
from app.context import Context
from app.monitoring.sample import Sample

#: The broker's queues (celeryconfig.QUEUES; tests/integration/test_metrics.py keeps them equal).
QUEUES = ("backup", "chunks", "wal", "restore", "verify", "replicate", "maintenance", "monitor")
#: kombu's Redis transport keeps priorities 3, 6 and 9 of a queue in lists named with this separator.
_PRIORITY_SEP, _PRIORITIES = "\x06\x16", (3, 6, 9)
JOB_WINDOW = timedelta(hours=24)


def queue_samples(ctx: Context, now: datetime) -> list[Sample]:
    """Messages waiting per queue (LLEN on a Redis broker); nothing without one."""
    url = ctx.settings.celery_broker_url
    if not url or urlsplit(url).scheme not in ("redis", "rediss"):
        return []
    import redis

    timeout = ctx.settings.health_check_timeout
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        out = []
        for queue in QUEUES:
            names = [queue, *(f"{queue}{_PRIORITY_SEP}{p}" for p in _PRIORITIES)]
            depth = sum(int(client.llen(name)) for name in names)
            out.append(
                Sample(
                    "equisplit_queue_depth",
                    "Messages waiting in a broker queue",
                    "queues",
                    depth,
                    {"queue": queue},
                )
            )
        return out
    finally:
        client.close()


def job_samples(ctx: Context, now: datetime) -> list[Sample]:
    out: list[Sample] = []
    with ctx.sessions() as session:
        jobs = session.execute(
            select(Job.kind, Job.state, Job.started_at, Job.finished_at).where(
                Job.created_at >= now - JOB_WINDOW
            )
        ).all()
        counts: dict[tuple[str, str], int] = {}
        durations: dict[str, list[float]] = {}
        for kind, state, started, finished in jobs:
            counts[(kind, state)] = counts.get((kind, state), 0) + 1
            if started is not None and finished is not None:
                durations.setdefault(kind, []).append(
                    (clock.as_utc(finished) - clock.as_utc(started)).total_seconds()
                )
        for (kind, state), n in sorted(counts.items()):
            out.append(
                Sample(
                    "equisplit_jobs",
                    "Jobs of the last 24 h per kind and state",
                    "jobs",
                    n,
                    {"kind": kind, "state": state},
                )
            )
        for kind, values in sorted(durations.items()):
            out.append(
                Sample(
                    "equisplit_job_duration_seconds_avg",
                    "Mean job duration, last 24 h",
                    "jobs",
                    round(sum(values) / len(values), 3),
                    {"kind": kind},
                )
            )
            out.append(
                Sample(
                    "equisplit_job_duration_seconds_max",
                    "Longest job, last 24 h",
                    "jobs",
                    round(max(values), 3),
                    {"kind": kind},
                )
            )
    return out


def alert_samples(ctx: Context, now: datetime) -> list[Sample]:
    with ctx.sessions() as session:
        open_by = dict(
            session.execute(
                select(Incident.severity, func.count())
                .where(Incident.resolved_at.is_(None))
                .group_by(Incident.severity)
            ).all()
        )
    return [
        Sample(
            "equisplit_alert_incidents_open",
            "Open alert incidents",
            "alerts",
            open_by.get(s, 0),
            {"severity": s},
        )
        for s in ("warning", "critical")
    ]
