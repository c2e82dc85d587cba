"""PagerDuty Events API v2: trigger on open and escalation, resolve when the condition clears; the
incident key is the dedup_key, so PagerDuty keeps one incident per condition too."""

from __future__ import annotations

import socket

from app import clock
from app.alerts.http import post_json
from app.alerts.message import RESOLVE, Alert


class PagerDutyChannel:
    name = "pagerduty"

    def __init__(self, routing_key: str, events_url: str, timeout: float) -> None:
        self._key = routing_key
        self._url = events_url
        self._timeout = timeout

    def send(self, alert: Alert) -> None:
        body: dict[str, object] = {
            "routing_key": self._key,
            "event_action": "resolve" if alert.action == RESOLVE else "trigger",
            "dedup_key": f"equisplit-dr:{alert.key}",
        }
        if alert.action != RESOLVE:
            body["payload"] = {
                "summary": alert.text[:1024],
                "source": socket.gethostname(),
                "severity": "critical" if alert.severity == "critical" else "warning",
                "component": alert.source or "equisplit-dr",
                "group": alert.condition,
                "class": alert.condition,
                "timestamp": clock.iso(alert.opened_at),
                "custom_details": {"key": alert.key, "action": alert.action, "message": alert.message},
            }
        post_json(self.name, "the PagerDuty Events API", self._url, body, self._timeout)
