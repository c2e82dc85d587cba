"""The schedule of recurring jobs, built from the policy settings, as plain data with next run times.

Pure: no Celery here; workers/schedule.py turns each entry into a beat entry. Times are in the
configured time zone (`SCHEDULE_TIMEZONE`, default UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from app.settings import Settings

_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 6),
)


def parse_cron(expr: str) -> tuple[frozenset[int], ...]:
    """Five cron fields (minute hour day-of-month month day-of-week, Sunday = 0) as sets of values.
    Each field is `*`, `*/N`, `A`, `A-B`, `A-B/N` or a comma list of those."""
    parts = expr.split()
    if len(parts) != 5:
        raise ValueError(
            f"cron expression {expr!r} needs 5 fields: minute hour day-of-month month day-of-week"
        )
    sets = []
    for text, (name, low, high) in zip(parts, _FIELDS, strict=True):
        values: set[int] = set()
        for item in text.split(","):
            rng, _, step_text = item.partition("/")
            step = int(step_text) if step_text else 1
            if rng == "*":
                a, b = low, high
            elif "-" in rng:
                a, b = (int(x) for x in rng.split("-", 1))
            else:
                a = b = int(rng)
            if not (low <= a <= b <= high) or step < 1:
                raise ValueError(f"cron {name} field {item!r} is outside {low}-{high}")
            values.update(range(a, b + 1, step))
        sets.append(frozenset(values))
    return tuple(sets)


#: When beat runs the restore drills, per DR_TEST_FREQUENCY (Monday morning, the first of a month...).
DRILL_CRON = {
    "daily": "0 5 * * *",
    "weekly": "0 5 * * 1",
    "monthly": "0 5 1 * *",
    "quarterly": "0 5 1 1,4,7,10 *",
}


@dataclass(frozen=True)
class ScheduleEntry:
    """One recurring job: every `every` seconds, or on a 5-field `cron` rule in the schedule's zone."""

    name: str
    task: str
    args: tuple[Any, ...] = ()
    queue: str = "backup"
    every: int | None = None
    cron: str | None = None
    description: str = ""

    def last_run(self, at: datetime) -> datetime:
        """The latest cron firing at or before `at`: the tick a task started at `at` belongs to."""
        assert self.cron is not None
        minute, hour, dom, month, dow = parse_cron(self.cron)
        t = at.replace(second=0, microsecond=0)
        for _ in range(60 * 24 * 400):  # a year and a bit of minutes: every valid rule fired sooner
            if (
                t.minute in minute
                and t.hour in hour
                and t.day in dom
                and t.month in month
                and (t.weekday() + 1) % 7 in dow
            ):
                return t
            t -= timedelta(minutes=1)
        raise ValueError(f"schedule {self.name} ({self.cron}) never fires")

    def next_run(self, after: datetime) -> datetime:
        """The first run time strictly after `after` (aware datetime, in the entry's time zone)."""
        if self.every is not None:
            return after + timedelta(seconds=self.every)
        assert self.cron is not None
        minute, hour, dom, month, dow = parse_cron(self.cron)
        t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(60 * 24 * 400):  # a year and a bit of minutes: every valid rule fires sooner
            if (
                t.minute in minute
                and t.hour in hour
                and t.day in dom
                and t.month in month
                and (t.weekday() + 1) % 7 in dow
            ):
                return t
            t += timedelta(minutes=1)
        raise ValueError(f"schedule {self.name} ({self.cron}) never fires")


def build_schedule(settings: Settings) -> list[ScheduleEntry]:
    """The spec's table (full daily at 02:00, incremental every 6 h, differential weekly, archive
    monthly), each rule overridable with BACKUP_SCHEDULE_<TYPE>; health checks every
    HEALTH_CHECK_INTERVAL seconds; the job reaper and the WAL archive check every minute."""
    s = settings
    return [
        ScheduleEntry(
            "backup-full",
            "tasks.backup.scheduled_backups",
            ("full",),
            cron=s.backup_schedule_full,
            description="full backup of every source",
        ),
        ScheduleEntry(
            "backup-incremental",
            "tasks.backup.scheduled_backups",
            ("incremental",),
            cron=s.backup_schedule_incremental,
            description="incremental backup of every source",
        ),
        ScheduleEntry(
            "backup-differential",
            "tasks.backup.scheduled_backups",
            ("differential",),
            cron=s.backup_schedule_differential,
            description="differential backup of every source",
        ),
        ScheduleEntry(
            "backup-archive",
            "tasks.backup.scheduled_backups",
            ("archive",),
            cron=s.backup_schedule_archive,
            description="archive backup of every source",
        ),
        ScheduleEntry(
            "verify",
            "tasks.verify.scheduled_verification",
            ("incremental",),
            queue="verify",
            cron=s.backup_schedule_verify,
            description="verify every backup: structure, new packs' data and a rotating share of the rest",
        ),
        ScheduleEntry(
            "verify-sample",
            "tasks.verify.scheduled_verification",
            ("sample",),
            queue="verify",
            cron=s.backup_schedule_verify_sample,
            description=f"verify a {s.backup_verify_sample:.0%} sample of every backup's data",
        ),
        *(
            [
                ScheduleEntry(
                    "restore-drill",
                    "tasks.verify.scheduled_drills",
                    queue="verify",
                    cron=DRILL_CRON[s.dr_test_frequency],
                    description=f"restore drill of every source ({s.dr_test_frequency}), RTO against {s.rto_target} s",
                )
            ]
            if s.dr_testing_enabled
            else []
        ),
        *(
            [
                ScheduleEntry(
                    "replicate",
                    "tasks.replicate.replicate",
                    queue="replicate",
                    every=s.backup_replication_interval,
                    description="copy new packs, WAL and manifests to every secondary region",
                )
            ]
            if s.backup_cross_region and s.secondary_storage_urls
            else []
        ),
        ScheduleEntry(
            "retention",
            "tasks.retention.apply_retention",
            queue="maintenance",
            cron=s.backup_schedule_retention,
            description="apply the retention policy: delete what no rule, hold or window keeps; thin WAL",
        ),
        ScheduleEntry(
            "audit-anchor",
            "tasks.audit.anchor_trail",
            queue="maintenance",
            every=s.audit_anchor_interval,
            description=f"seal the audit trail's head in storage every {s.audit_anchor_interval} s",
        ),
        ScheduleEntry(
            "health-check",
            "tasks.monitor.health_check",
            queue="monitor",
            every=s.health_check_interval,
            description=f"health check every {s.health_check_interval} s",
        ),
        ScheduleEntry(
            "reap-jobs",
            "tasks.monitor.reap_jobs",
            queue="monitor",
            every=60,
            description="fail jobs whose worker stopped beating",
        ),
        ScheduleEntry(
            "reconcile-backups",
            "tasks.maintenance.reconcile",
            queue="maintenance",
            every=3600,
            description="settle backups whose process died; delete their leftovers past the grace period",
        ),
        ScheduleEntry(
            "wal-archive-check",
            "tasks.wal.archive_check",
            queue="wal",
            every=60,
            description="WAL archive of every PostgreSQL source: gaps and achieved RPO",
        ),
    ]


def upcoming(settings: Settings, now: datetime, count: int = 3) -> list[dict[str, Any]]:
    """Each entry with its next `count` run times, for `equisplit-dr schedule show`."""
    zone = ZoneInfo(settings.schedule_timezone)
    local_now = now.astimezone(zone)
    rows = []
    for entry in build_schedule(settings):
        times, t = [], local_now
        for _ in range(count):
            t = entry.next_run(t)
            times.append(t.isoformat(timespec="minutes"))
        rows.append(
            {
                "name": entry.name,
                "task": entry.task,
                "args": list(entry.args),
                "queue": entry.queue,
                "rule": entry.cron or f"every {entry.every} s",
                "description": entry.description,
                "next_runs": times,
            }
        )
    return rows


def tick_of(settings: Settings, entry_name: str, now: datetime) -> str:
    """The scheduled firing of `entry_name` at or before `now`, as a claim slot. Beat computes it when it
    sends a tick (workers/schedule.py) and the message carries it, so two beats' ticks map to the same
    firing however late each is processed, and a worker never needs rules of its own."""
    entry = next(e for e in build_schedule(settings) if e.name == entry_name)
    local = now.astimezone(ZoneInfo(settings.schedule_timezone))
    return entry.last_run(local).isoformat(timespec="minutes")
