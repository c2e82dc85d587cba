"""Health checks of storage: utilisation against BACKUP_STORAGE_QUOTA_BYTES (or a local directory's file
system), and orphaned objects (what storage holds that the catalog does not reference), counted by
bounded listings so a large repository costs no more than ALERT_ORPHAN_SCAN_LIMIT names per check."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime
from itertools import islice
from typing import Any

from sqlalchemy import func, select

from app.catalog.models import Backup, Pack, WalSegment
from app.context import Context
from app.monitoring.health import CheckResult, HealthIssue
from app.monitoring.storage_status import local_root
from app.monitoring.thresholds import Thresholds
from app.repo.format import Kind

_BATCH = 500


def storage_usage(ctx: Context, quota: int) -> dict[str, Any]:
    """Used bytes and percent of the primary storage: against the quota, the catalog's count of pack and
    WAL bytes (what backups add); without one, a local directory's file system; else unknown."""
    if quota > 0:
        with ctx.sessions() as session:
            packs = int(session.scalar(select(func.coalesce(func.sum(Pack.size), 0))) or 0)
            wal = int(session.scalar(select(func.coalesce(func.sum(WalSegment.stored_size), 0))) or 0)
        used = packs + wal
        return {
            "basis": "quota",
            "used_bytes": used,
            "capacity_bytes": quota,
            "used_percent": 100 * used / quota,
        }
    root = local_root(ctx.settings.storage_url)
    if root is None:
        return {"basis": "unknown", "used_bytes": None, "capacity_bytes": None, "used_percent": None}
    usage = shutil.disk_usage(root if root.exists() else root.parent)
    used = usage.total - usage.free
    return {
        "basis": "file system",
        "used_bytes": used,
        "capacity_bytes": usage.total,
        "used_percent": 100 * used / usage.total if usage.total else None,
    }


def check_utilisation(ctx: Context, limits: Thresholds, now: datetime) -> CheckResult:
    usage = storage_usage(ctx, limits.storage_quota_bytes)
    result = CheckResult(figures={"usage": usage})
    percent = usage["used_percent"]
    if percent is None:
        return result
    severity = (
        "critical"
        if percent >= limits.storage_critical_percent
        else "warning"
        if percent >= limits.storage_warning_percent
        else None
    )
    if severity:
        what = "of BACKUP_STORAGE_QUOTA_BYTES" if usage["basis"] == "quota" else "of its file system"
        result.issues.append(
            HealthIssue(
                severity,
                None,
                f"primary storage {percent:.1f}% full ({usage['used_bytes']} of {usage['capacity_bytes']} bytes "
                f"{what}; warning at {limits.storage_warning_percent:g}%, critical at "
                f"{limits.storage_critical_percent:g}%)",
                condition="storage_utilisation",
                subject="primary",
            )
        )
    return result


def _batches(names: list[str]) -> Iterator[list[str]]:
    it = iter(names)
    while batch := list(islice(it, _BATCH)):
        yield batch


def check_orphans(ctx: Context, limits: Thresholds, now: datetime) -> CheckResult:
    """Unit results of backups no longer running, and packs no catalog row names (only while no backup
    runs: a pack is written before its row, so a running backup's newest packs have none yet)."""
    storage = ctx.storage
    limit = limits.orphan_scan_limit
    units = [info.name for info in islice(storage.list(Kind.UNITS), limit + 1)]
    figures: dict[str, Any] = {"units_scanned": min(len(units), limit)}
    orphans: dict[str, int] = {}
    with ctx.sessions() as session:
        backup_ids = sorted({name.split(".", 1)[0] for name in units[:limit]})
        running = set()
        for batch in _batches(backup_ids):
            running |= set(
                session.scalars(select(Backup.id).where(Backup.id.in_(batch), Backup.state == "running"))
            )
        orphans["units"] = sum(1 for name in units[:limit] if name.split(".", 1)[0] not in running)
        any_running = session.scalar(select(Backup.id).where(Backup.state == "running").limit(1)) is not None
        if any_running:
            figures["packs_scanned"] = 0
            figures["packs_note"] = "a backup is running: packs not compared"
        else:
            packs = [info.name for info in islice(storage.list(Kind.PACKS), limit + 1)]
            if len(packs) > limit:
                figures["packs_scanned"] = 0
                figures["packs_note"] = f"more than {limit} packs: not compared (ALERT_ORPHAN_SCAN_LIMIT)"
            else:
                known: set[str] = set()
                for batch in _batches(packs):
                    known |= set(session.scalars(select(Pack.id).where(Pack.id.in_(batch))))
                orphans["packs"] = len(set(packs) - known)
                figures["packs_scanned"] = len(packs)
    figures["orphans"] = orphans
    result = CheckResult(figures=figures)
    total = sum(orphans.values())
    if total:
        what = ", ".join(f"{n} in {kind}/" for kind, n in orphans.items() if n)
        result.issues.append(
            HealthIssue(
                "warning",
                None,
                f"{total} orphaned object(s) in storage that the catalog does not reference ({what})",
                condition="orphaned_objects",
                subject="primary",
            )
        )
    return result
