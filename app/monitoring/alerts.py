"""Alerts: a failure an operator must hear about, said once at error level on the `equisplit.alerts`
logger. Where SENTRY_DSN is set, sentry-sdk's logging integration (on by default, workers/signals.py)
turns each such record into a Sentry event at once; the health check then follows the failure as an
incident through every alert channel (app/alerts/)."""

from __future__ import annotations

import logging

log = logging.getLogger("equisplit.alerts")


def backup_failed(backup_id: str, source: str, message: str) -> None:
    """A backup ended failed: which one, of which source, and why (never a secret: messages name
    objects and settings, not values)."""
    log.error(
        "backup %s of source %s failed: %s",
        backup_id,
        source,
        message,
        extra={"backup_id": backup_id, "source": source},
    )
