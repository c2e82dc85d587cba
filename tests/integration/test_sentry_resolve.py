"""With a Sentry auth token, organization and project, an incident that clears resolves its Sentry issue
through the web API (docs/MONITORING.md section 2): the issue is found by its `alert.key` tag and resolved
by id, with the token as a bearer; a refused resolve stays owed and names no secret. Without them, the
resolve stays an info event."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from app.alerts.incidents import evaluate_alerts
from app.alerts.sentry_api import api_base_from_dsn
from app.catalog.models import Incident
from tests.support.sentry_server import SentryServer
from tests.support.system import Factory
from tests.support.trees import make_tree

KEY = "no_backup:docs"


class SentryApi:
    """A loopback stand-in for Sentry's web API: records every request; issue search answers one issue
    (id 4711) for the `alert.key` of KEY and none otherwise; `status` is what every answer's code is."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: Any) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                api.requests.append(
                    {
                        "method": self.command,
                        "path": parts.path,
                        "query": parse_qs(parts.query),
                        "authorization": self.headers.get("Authorization"),
                        "body": json.loads(self.rfile.read(length)) if length else None,
                    }
                )
                data = json.dumps(body).encode()
                self.send_response(api.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query).get("query", [""])[0]
                self._answer([{"id": "4711", "status": "unresolved"}] if f'alert.key:"{KEY}"' in query else [])

            def do_PUT(self) -> None:
                self._answer({"status": "resolved"})

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def sentry_api() -> Iterator[SentryApi]:
    api = SentryApi()
    yield api
    api.server.shutdown()
    api.server.server_close()


def _system(make_system: Factory, sentry_server: SentryServer, **extra: Any) -> Any:
    return make_system(
        sentry_dsn=sentry_server.dsn, backup_cross_region=False, backup_storage_quota_bytes=1 << 40, **extra
    )


def _tags(event: dict[str, Any]) -> dict[str, str]:
    tags = event.get("tags") or {}
    return dict(tags) if isinstance(tags, dict) else {k: v for k, v in tags}


def _actions(sentry_server: SentryServer) -> list[str]:
    with sentry_server._lock:
        events = list(sentry_server.events)
    return [_tags(e).get("alert.action", "?") for e in events if _tags(e).get("alert.key") == KEY]


def test_a_cleared_incident_resolves_its_sentry_issue_through_the_api(
    make_system: Factory, sentry_server: SentryServer, sentry_api: SentryApi, tmp_path: Path
) -> None:
    token = f"sntrys_{secrets.token_hex(16)}"
    system = _system(
        make_system, sentry_server,
        sentry_auth_token=token, sentry_org="acme", sentry_project="backups", sentry_api_url=sentry_api.url,
    )  # fmt: skip
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=0, small=3))
    assert KEY in evaluate_alerts(system.context).opened
    sentry_server.wait_for(lambda e: _tags(e).get("alert.key") == KEY)
    assert sentry_api.requests == []  # an open is an event, never an API call

    system.create_full_backup("docs")
    sentry_api.status = 500  # Sentry's API down: the resolve stays owed, its error names no secret
    assert KEY in evaluate_alerts(system.context).resolved
    with system.context.sessions() as session:
        incident = session.query(Incident).filter_by(key=KEY).one()
        assert "sentry" in (incident.last_error or "") and "HTTP 500" in incident.last_error
        assert token not in incident.last_error and sentry_api.url not in incident.last_error
    sentry_api.status = 200
    sentry_api.requests.clear()
    evaluate_alerts(system.context)

    issues = "/api/0/projects/acme/backups/issues/"
    search = [r for r in sentry_api.requests if r["method"] == "GET" and f'alert.key:"{KEY}"' in r["query"]["query"][0]]
    assert len(search) == 1 and search[0]["path"] == issues
    assert search[0]["query"]["query"] == [f'is:unresolved alert.key:"{KEY}"']
    resolved = [r for r in sentry_api.requests if r["method"] == "PUT"]
    assert resolved == [
        {"method": "PUT", "path": issues, "query": {"id": ["4711"]}, "authorization": f"Bearer {token}",
         "body": {"status": "resolved"}}
    ]  # fmt: skip
    assert all(r["authorization"] == f"Bearer {token}" for r in sentry_api.requests)
    assert "resolve" not in _actions(sentry_server)  # no info event beside the API's resolve
    with system.context.sessions() as session:
        incident = session.query(Incident).filter_by(key=KEY).one()
        assert incident.resolved_at is not None and not incident.pending


def test_without_an_api_token_a_resolve_is_an_info_event(
    make_system: Factory, sentry_server: SentryServer, tmp_path: Path
) -> None:
    system = _system(make_system, sentry_server)
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=0, small=3))
    evaluate_alerts(system.context)
    system.create_full_backup("docs")
    assert KEY in evaluate_alerts(system.context).resolved
    sentry_server.wait_for(lambda e: _tags(e).get("alert.key") == KEY and _tags(e).get("alert.action") == "resolve")
    assert _actions(sentry_server).count("resolve") == 1


def test_the_api_base_comes_from_the_dsn() -> None:
    assert api_base_from_dsn("https://abc@o12.ingest.us.sentry.io/345") == "https://sentry.io"
    assert api_base_from_dsn("https://abc@sentry.example.com/7") == "https://sentry.example.com"
    assert api_base_from_dsn("http://abc@10.0.0.5:9000/sentry/7") == "http://10.0.0.5:9000/sentry"
