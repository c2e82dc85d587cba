"""Sentry: one event per alert on a client of its own (SENTRY_DSN), with the level, tags (condition,
source, key, action) and a fingerprint per condition key, so Sentry groups an incident's events into
one issue. A resolve resolves that issue through Sentry's web API when an auth token, organization and
project are set (app/alerts/sentry_api.py); otherwise it is an info event on a fingerprint of its own,
so it never reopens that issue."""

from __future__ import annotations

from typing import Any

from app.alerts.message import RESOLVE, Alert
from app.alerts.sentry_api import SentryIssues


class SentryChannel:
    name = "sentry"

    def __init__(self, dsn: str, timeout: float, issues: SentryIssues | None = None) -> None:
        self._dsn = dsn
        self._timeout = timeout
        self._client: Any = None
        self._issues = issues

    def _scope(self) -> Any:
        import sentry_sdk

        if self._client is None:
            self._client = sentry_sdk.Client(
                dsn=self._dsn, default_integrations=False, auto_enabling_integrations=False
            )
        scope = sentry_sdk.Scope()
        scope.set_client(self._client)
        return scope

    def send(self, alert: Alert) -> None:
        if alert.action == RESOLVE and self._issues is not None:
            self._issues.resolve(alert.key)  # a failure raises AlertDeliveryError: the resolve stays owed
            return
        scope = self._scope()
        level = (
            "info" if alert.action == RESOLVE else ("fatal" if alert.severity == "critical" else "warning")
        )
        for tag, value in (
            ("alert.condition", alert.condition),
            ("alert.key", alert.key),
            ("alert.action", alert.action),
            ("alert.severity", alert.severity),
            ("source", alert.source or "-"),
        ):
            scope.set_tag(tag, value)
        scope.fingerprint = ["equisplit-dr", alert.key] + (["resolved"] if alert.action == RESOLVE else [])
        scope.set_level(level)
        # the client is ours, not the process's: capture through it with this scope
        self._client.capture_event({"message": alert.text, "level": level}, scope=scope)
        self._client.flush(timeout=self._timeout)

    def close(self) -> None:
        if self._client is not None:
            self._client.close(timeout=self._timeout)
            self._client = None
