"""Health checks of recoverability: the RPO of each PostgreSQL source (the newest archived WAL against
MAX_DATA_LOSS_SECONDS), and per source the last restore drill (failed, or over its RTO target) and the
age of the last *verified restore*, which alerts even when every backup job reports success."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select

from app import clock
from app.catalog import wal as catalog_wal
from app.catalog.backups import USABLE_STATES
from app.catalog.models import Backup, Drill
from app.catalog.sources import list_sources
from app.context import Context
from app.monitoring.health import CheckResult, HealthIssue
from app.monitoring.thresholds import Thresholds


def check_rpo(ctx: Context, limits: Thresholds, now: datetime) -> CheckResult:
    result = CheckResult()
    rpo: dict[str, float | None] = {}
    with ctx.sessions() as session:
        for source in list_sources(session):
            if source.kind != "postgres":
                continue
            archive = catalog_wal.get_archive(session, source.id)
            newest = archive.newest_record_at if archive else None
            if newest is None:
                rpo[source.name] = None
                result.issues.append(
                    HealthIssue(
                        "warning",
                        source.name,
                        "no WAL archived yet: nothing bounds the data a failure would lose "
                        "(see `equisplit-dr wal status`)",
                        condition="rpo_breach",
                    )
                )
                continue
            seconds = (now - clock.as_utc(newest)).total_seconds()
            rpo[source.name] = round(seconds, 1)
            if seconds > limits.max_data_loss_seconds:
                result.issues.append(
                    HealthIssue(
                        "critical",
                        source.name,
                        f"RPO breached: the newest archived WAL ({archive.newest_segment if archive else '-'}) "
                        f"is {int(seconds)} s old, over MAX_DATA_LOSS_SECONDS ({limits.max_data_loss_seconds} s)",
                        condition="rpo_breach",
                    )
                )
    result.figures["rpo_seconds"] = rpo
    return result


def check_drills(ctx: Context, limits: Thresholds, now: datetime) -> CheckResult:
    result = CheckResult()
    max_age = timedelta(seconds=limits.verified_restore_max_age_seconds)
    with ctx.sessions() as session:
        for source in list_sources(session):
            last = session.scalar(
                select(Drill)
                .where(Drill.source_id == source.id, Drill.outcome != "running")
                .order_by(Drill.started_at.desc())
                .limit(1)
            )
            if last is not None and last.outcome == "failed":
                result.issues.append(
                    HealthIssue(
                        "warning",
                        source.name,
                        f"restore drill {last.id} failed: {last.error or 'no error recorded'}",
                        condition="drill_failed",
                    )
                )
            elif (
                last is not None
                and last.rto_seconds is not None
                and last.rto_seconds > last.rto_target_seconds
            ):
                result.issues.append(
                    HealthIssue(
                        "warning",
                        source.name,
                        f"restore drill {last.id} took {last.rto_seconds:.0f} s, over its RTO target "
                        f"({last.rto_target_seconds} s)",
                        condition="rto_breach",
                    )
                )
            passed = session.scalar(
                select(func.max(Drill.started_at)).where(
                    Drill.source_id == source.id, Drill.outcome == "passed"
                )
            )
            if passed is not None:
                if now - clock.as_utc(passed) > max_age:
                    result.issues.append(
                        HealthIssue(
                            "warning",
                            source.name,
                            f"no verified restore since {clock.iso(passed)} (older than "
                            f"{limits.verified_restore_max_age_seconds // 3600} h): run `equisplit-dr dr test`",
                            condition="restore_unverified",
                        )
                    )
                continue
            first = session.scalar(
                select(func.min(Backup.started_at)).where(
                    Backup.source_id == source.id, Backup.state.in_(USABLE_STATES)
                )
            )
            if first is not None and now - clock.as_utc(first) > max_age:
                result.issues.append(
                    HealthIssue(
                        "warning",
                        source.name,
                        f"no restore drill has passed since its first backup ({clock.iso(first)}): "
                        "run `equisplit-dr dr test`",
                        condition="restore_unverified",
                    )
                )
    return result
