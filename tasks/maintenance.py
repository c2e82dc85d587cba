"""Maintenance tasks (queue `maintenance`): reconcile what killed backups left behind."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from app.backup.reconcile import reconcile as reconcile_backups


@shared_task(bind=True, name="tasks.maintenance.reconcile")
def reconcile(self: Any, dry_run: bool = False) -> dict[str, Any]:
    """Settle dead backups of every source and delete their leftovers past the grace period."""
    return reconcile_backups(self.ctx, dry_run=dry_run, actor="celery").to_json()
