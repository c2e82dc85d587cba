"""Metrics (`monitoring metrics`, the Prometheus endpoint): figures collected from the catalog, the
storage usage, replication's status and the broker's queues, each sample a name, labels and a value.
Pure collection; exposition.py turns the same samples into Prometheus' format. Every figure comes from a
bounded query (per source, per kind), never from listing storage."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select

from app import clock
from app.catalog.backups import latest_backup
from app.catalog.models import Backup, Drill, WalArchive
from app.catalog.sources import list_sources
from app.catalog.verifications import last_runs
from app.context import Context
from app.monitoring.replication_health import region_lags
from app.monitoring.sample import Sample
from app.monitoring.storage_health import storage_usage
from app.monitoring.work_metrics import alert_samples, job_samples, queue_samples

#: Drills counted in the success rate: those of this window.
DRILL_WINDOW = timedelta(days=90)


Collector = Callable[[Context, datetime], list[Sample]]


def _seconds(now: datetime, then: datetime | None) -> float | None:
    return round((now - clock.as_utc(then)).total_seconds(), 1) if then is not None else None


def backup_samples(ctx: Context, now: datetime) -> list[Sample]:
    out: list[Sample] = []
    with ctx.sessions() as session:
        for source in list_sources(session):
            labels = {"source": source.name}
            newest = latest_backup(session, source.id)
            when = (newest.finished_at or newest.started_at) if newest else None
            out.append(
                Sample(
                    "equisplit_backup_last_age_seconds",
                    "Age of the newest restorable backup",
                    "backup",
                    _seconds(now, when),
                    labels,
                )
            )
            size = newest.bytes_total if newest else None
            out.append(
                Sample(
                    "equisplit_backup_last_size_bytes",
                    "Bytes the newest restorable backup holds",
                    "backup",
                    size,
                    labels,
                )
            )
            stored = newest.bytes_stored if newest else None
            out.append(
                Sample(
                    "equisplit_backup_last_stored_bytes",
                    "Bytes the newest backup added to storage",
                    "backup",
                    stored,
                    labels,
                )
            )
            dedup = newest.bytes_total / newest.bytes_new if newest and newest.bytes_new else None
            out.append(
                Sample(
                    "equisplit_backup_dedup_ratio",
                    "Bytes held / new bytes, newest backup",
                    "backup",
                    dedup,
                    labels,
                )
            )
            compression = newest.bytes_new / newest.bytes_stored if newest and newest.bytes_stored else None
            out.append(
                Sample(
                    "equisplit_backup_compression_ratio",
                    "New bytes / stored bytes, newest backup",
                    "backup",
                    compression,
                    labels,
                )
            )
            total = session.scalar(
                select(func.count())
                .select_from(Backup)
                .where(Backup.source_id == source.id, Backup.state == "failed")
            )
            out.append(
                Sample(
                    "equisplit_backups_failed",
                    "Failed backups in the catalog",
                    "backup",
                    total or 0,
                    labels,
                )
            )
    return out


def verification_samples(ctx: Context, now: datetime) -> list[Sample]:
    with ctx.sessions() as session:
        runs = last_runs(session, limit=1)
        damaged = session.scalar(
            select(func.count()).select_from(Backup).where(Backup.damaged_at.is_not(None))
        )
    run = runs[0] if runs else None
    passed = (1.0 if run.outcome == "passed" else 0.0) if run and run.outcome != "running" else None
    return [
        Sample(
            "equisplit_verification_last_passed",
            "1 if the last verification passed, 0 if not",
            "verification",
            passed,
        ),
        Sample(
            "equisplit_verification_last_age_seconds",
            "Age of the last verification",
            "verification",
            _seconds(now, (run.finished_at or run.started_at) if run else None),
        ),
        Sample(
            "equisplit_backups_damaged", "Backups verification found damaged", "verification", damaged or 0
        ),
    ]


def recovery_samples(ctx: Context, now: datetime) -> list[Sample]:
    out: list[Sample] = [
        Sample(
            "equisplit_rpo_target_seconds",
            "MAX_DATA_LOSS_SECONDS",
            "recovery",
            ctx.settings.max_data_loss_seconds,
        ),
        Sample("equisplit_rto_target_seconds", "RTO_TARGET", "recovery", ctx.settings.rto_target),
    ]
    with ctx.sessions() as session:
        for source in list_sources(session):
            labels = {"source": source.name}
            if source.kind == "postgres":
                archive = session.get(WalArchive, source.id)
                out.append(
                    Sample(
                        "equisplit_rpo_seconds",
                        "Age of the newest archived WAL record",
                        "recovery",
                        _seconds(now, archive.newest_record_at if archive else None),
                        labels,
                    )
                )
            last = session.scalar(
                select(Drill)
                .where(Drill.source_id == source.id, Drill.outcome != "running")
                .order_by(Drill.started_at.desc())
                .limit(1)
            )
            out.append(
                Sample(
                    "equisplit_drill_last_rto_seconds",
                    "Measured RTO of the last drill",
                    "recovery",
                    last.rto_seconds if last else None,
                    labels,
                )
            )
            passed_at = session.scalar(
                select(func.max(Drill.started_at)).where(
                    Drill.source_id == source.id, Drill.outcome == "passed"
                )
            )
            out.append(
                Sample(
                    "equisplit_drill_last_passed_age_seconds",
                    "Age of the last verified restore",
                    "recovery",
                    _seconds(now, passed_at),
                    labels,
                )
            )
            counts = dict(
                session.execute(
                    select(Drill.outcome, func.count())
                    .where(
                        Drill.source_id == source.id,
                        Drill.started_at >= now - DRILL_WINDOW,
                        Drill.outcome != "running",
                    )
                    .group_by(Drill.outcome)
                ).all()
            )
            total = sum(counts.values())
            rate = counts.get("passed", 0) / total if total else None
            out.append(
                Sample(
                    "equisplit_drill_success_ratio",
                    "Passed drills / drills, last 90 days",
                    "recovery",
                    rate,
                    labels,
                )
            )
    return out


def storage_samples(ctx: Context, now: datetime) -> list[Sample]:
    usage = storage_usage(ctx, ctx.settings.backup_storage_quota_bytes)
    primary = ctx.settings.primary_region
    out = [
        Sample(
            "equisplit_storage_used_bytes",
            "Bytes used of the primary storage",
            "storage",
            usage["used_bytes"],
            {"region": primary},
        ),
        Sample(
            "equisplit_storage_used_ratio",
            "Used / capacity of the primary storage (quota or file system)",
            "storage",
            usage["used_percent"] / 100 if usage["used_percent"] is not None else None,
            {"region": primary},
        ),
    ]
    with ctx.sessions() as session:
        rows = session.execute(
            select(Backup.storage_class, func.coalesce(func.sum(Backup.bytes_stored), 0))
            .where(Backup.state.in_(("complete", "partial")))
            .group_by(Backup.storage_class)
        ).all()
        for storage_class, stored in rows:
            out.append(
                Sample(
                    "equisplit_storage_stored_bytes",
                    "Bytes backups added to storage, per region and storage class",
                    "storage",
                    int(stored),
                    {"region": primary, "storage_class": storage_class or "STANDARD"},
                )
            )
    for region in region_lags(ctx):
        copied = (region.get("bytes") or {}).get("copied")
        if copied is not None:
            out.append(
                Sample(
                    "equisplit_storage_stored_bytes",
                    "Bytes backups added to storage, per region and storage class",
                    "storage",
                    copied,
                    {"region": region["region"], "storage_class": "STANDARD"},
                )
            )
    return out


def replication_samples(ctx: Context, now: datetime) -> list[Sample]:
    return [
        Sample(
            "equisplit_replication_lag_seconds",
            "Age of the oldest object not yet copied",
            "replication",
            r["lag_seconds"],
            {"region": r["region"]},
        )
        for r in region_lags(ctx)
    ]


COLLECTORS: dict[str, Collector] = {
    "backup": backup_samples,
    "verification": verification_samples,
    "recovery": recovery_samples,
    "storage": storage_samples,
    "replication": replication_samples,
    "queues": queue_samples,
    "jobs": job_samples,
    "alerts": alert_samples,
}


def collect_metrics(ctx: Context, component: str | None = None) -> list[Sample]:
    """Every sample, or those of one component (ConfigurationError naming the known ones)."""
    from app.errors import ConfigurationError

    if component is not None and component not in COLLECTORS:
        raise ConfigurationError(
            f"unknown metrics component {component!r}",
            hint="use one of " + ", ".join(COLLECTORS),
        )
    now = clock.now()
    chosen = [component] if component else list(COLLECTORS)
    return [sample for name in chosen for sample in COLLECTORS[name](ctx, now)]
