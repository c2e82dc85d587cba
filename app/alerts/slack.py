"""Slack: an incoming webhook (DR_SLACK_WEBHOOK) gets `{"text": ...}` as JSON."""

from __future__ import annotations

from app.alerts.http import post_json
from app.alerts.message import Alert


class SlackChannel:
    name = "slack"

    def __init__(self, webhook_url: str, timeout: float) -> None:
        self._url = webhook_url
        self._timeout = timeout

    def send(self, alert: Alert) -> None:
        icon = {"critical": ":red_circle:", "warning": ":warning:"}.get(
            alert.severity, ":information_source:"
        )
        if alert.action == "resolve":
            icon = ":white_check_mark:"
        text = f"{icon} {alert.text}\nincident {alert.key}"
        post_json(self.name, "the Slack webhook", self._url, {"text": text}, self._timeout)
