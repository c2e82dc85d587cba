"""Resolving an incident's Sentry issue through Sentry's web API (SENTRY_AUTH_TOKEN, SENTRY_ORG,
SENTRY_PROJECT; docs/MONITORING.md section 2). The issue is found by the `alert.key` tag every event
of the incident carries (List a Project's Issues, `query=is:unresolved alert.key:"KEY"`), then resolved
by id (Bulk Mutate a List of Issues: `PUT .../issues/?id=N` with `{"status": "resolved"}`). Never an
id-less bulk update: that would resolve every issue of the project."""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode, urlsplit

from app.alerts.http import request_json
from app.errors import AlertDeliveryError

SAAS_API = "https://sentry.io"


def api_base_from_dsn(dsn: str) -> str:
    """The web API's base URL for a DSN: Sentry's own for an ingest host of sentry.io, otherwise the
    DSN's scheme, host and path prefix (a self-hosted Sentry answers both on one address)."""
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    if host == "sentry.io" or host.endswith(".sentry.io"):
        return SAAS_API
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    prefix = parts.path.rstrip("/").rsplit("/", 1)[0]  # the path before the project id
    return f"{parts.scheme}://{netloc}{prefix}"


class SentryIssues:
    """The project's issues through the web API, authenticated with a bearer token."""

    def __init__(self, base_url: str, org: str, project: str, token: str, timeout: float) -> None:
        self._issues = f"{base_url.rstrip('/')}/api/0/projects/{quote(org, safe='')}/{quote(project, safe='')}/issues/"
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = timeout

    def resolve(self, key: str) -> list[str]:
        """Resolve the unresolved issues whose events carry `alert.key` = key; the ids resolved."""
        query = urlencode({"query": f'is:unresolved alert.key:"{key}"'})
        answer = request_json(
            "sentry", "the Sentry API (issue search)", f"{self._issues}?{query}", None, self._timeout,
            method="GET", headers=self._headers,
        )  # fmt: skip
        try:
            found = json.loads(answer or b"[]")
            ids = [str(issue["id"]) for issue in found]
        except (ValueError, TypeError, KeyError):
            raise AlertDeliveryError(
                "sentry: the Sentry API's issue search answered something other than a list of issues",
                hint="check SENTRY_API_URL (or the DSN's host), SENTRY_ORG and SENTRY_PROJECT",
            ) from None
        if ids:
            request_json(
                "sentry", "the Sentry API (resolve)", f"{self._issues}?{urlencode([('id', i) for i in ids])}",
                {"status": "resolved"}, self._timeout, method="PUT", headers=self._headers,
            )  # fmt: skip
        return ids
