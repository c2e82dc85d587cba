"""Audit task (queue `maintenance`): beat seals the trail's head in storage (docs/AUDIT.md section 3)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from app.audit.service import anchor_trail


@shared_task(bind=True, name="tasks.audit.anchor_trail")
def anchor_trail_task(self: Any) -> dict[str, Any]:
    heads = anchor_trail(self.ctx)
    return {"anchors": [h.to_json() for h in heads]}
