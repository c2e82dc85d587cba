"""Retention task (queue `maintenance`): beat's daily application of the retention policy, then a
garbage collection (docs/RETENTION.md, docs/GC.md). The result names what was deleted; every deletion is
audited with its reason."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from app.gc.run import collect_garbage
from app.retention.apply import apply_plan
from app.retention.plan import plan_retention


@shared_task(bind=True, name="tasks.retention.apply_retention")
def apply_retention(self: Any, source: str | None = None, confirm: bool = True) -> dict[str, Any]:
    plan = plan_retention(self.ctx, source=source)
    report = apply_plan(self.ctx, plan, confirm=confirm, actor="beat")
    garbage = collect_garbage(self.ctx, confirm=confirm, actor="beat")
    return {"kept": len(plan.backups) - len(plan.deletions), **report.to_json(), "gc": garbage.to_json()}
