"""`monitoring test-alerts`: one test message through each configured channel, each answer reported."""

from __future__ import annotations

from typing import Any

from app import clock
from app.alerts.channels import ALL, close_channels, configured_channels
from app.alerts.message import TEST, Alert
from app.errors import EquisplitError, first_line
from app.settings import Settings


def send_test_alerts(settings: Settings) -> list[dict[str, Any]]:
    """Per channel: ok True (sent), False (it failed, with why) or None (not configured)."""
    channels = configured_channels(settings)
    alert = Alert(
        action=TEST,
        key="test:alert-channels",
        condition="test",
        severity="warning",
        source=None,
        message="a test of the alert channels (`equisplit-dr monitoring test-alerts`); nothing is wrong",
        opened_at=clock.now(),
    )
    results: list[dict[str, Any]] = []
    try:
        for name in ALL:
            channel = channels.get(name)
            if channel is None:
                results.append({"channel": name, "ok": None, "detail": "not configured"})
                continue
            try:
                channel.send(alert)
            except EquisplitError as exc:
                results.append({"channel": name, "ok": False, "detail": exc.message})
            except Exception as exc:
                results.append(
                    {"channel": name, "ok": False, "detail": f"{exc.__class__.__name__}: {first_line(exc)}"}
                )
            else:
                results.append({"channel": name, "ok": True, "detail": "sent"})
    finally:
        close_channels(channels)
    return results
