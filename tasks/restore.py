"""Restore tasks: a backup id (or `latest` with a source) and a target directory in, a summary out. A
task from the broker writes only below the workers' BACKUP_RESTORE_ROOTS (docs/CLUSTER.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import shared_task

from app.system import BackupSystem


@shared_task(name="tasks.restore.restore_backup")
def restore_backup(
    backup_id: str,
    target: str,
    source: str | None = None,
    paths: list[str] | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
) -> dict[str, Any]:
    with BackupSystem(actor="celery") as system:
        plan = system.restore(
            backup_id,
            Path(target),
            source=source,
            paths=paths,
            overwrite=overwrite,
            skip_existing=skip_existing,
            within_roots=True,
        )
    return {
        "backup_id": plan.backup_id,
        "target": target,
        "files": plan.files,
        "bytes": plan.bytes,
        "processes": plan.processes,
    }
