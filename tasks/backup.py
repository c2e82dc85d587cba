"""Backup tasks: the arguments are a source name and a backup type, the result the backup's id."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from app.system import BackupSystem


@shared_task(name="tasks.backup.run_backup")
def run_backup(source: str, backup_type: str) -> dict[str, Any]:
    with BackupSystem(actor="celery") as system:
        result = system.create_backup(source, backup_type)
    return {"backup_id": result.id, "source": result.source, "type": result.type, "state": result.state}
