"""Loopback stand-ins for the alert channels, receiving the real messages: an SMTP server (aiosmtpd) and
an HTTP server for the Slack webhook and PagerDuty's Events API. With `sentry_server`
(tests/support/sentry_server.py), `alert_env` gives the settings that point every channel at them."""

from __future__ import annotations

import email
import email.policy
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.ports import free_port

SLACK_PATH = "/services/T000/B000/slack-secret-token"
PAGERDUTY_PATH = "/v2/enqueue"
PAGERDUTY_KEY = "pd-routing-key-secret-0123456789"


@dataclass
class Inbox:
    """What a loopback server received, in order."""

    items: list[Any] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def add(self, item: Any) -> None:
        with self.cond:
            self.items.append(item)
            self.cond.notify_all()

    def snapshot(self) -> list[Any]:
        with self.cond:
            return list(self.items)

    def wait_for(self, predicate: Callable[[Any], bool], timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for item in self.items:
                    if predicate(item):
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"nothing matching in {timeout} s; got {self.items}")
                self.cond.wait(left)


class _Handler:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.inbox.add({"to": list(envelope.rcpt_tos), "from": envelope.mail_from, "message": message})
        return "250 OK"


@dataclass
class SmtpServer:
    port: int
    mails: Inbox


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    port = free_port()
    controller = Controller(_Handler(inbox), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer(port, inbox)
    finally:
        controller.stop()


@dataclass
class HookServer:
    """Slack webhook posts (`slack`) and PagerDuty events (`pagerduty`), each a parsed JSON body; answers
    `status` (200 by default; 202 for PagerDuty as the real API does)."""

    port: int = 0
    slack: Inbox = field(default_factory=Inbox)
    pagerduty: Inbox = field(default_factory=Inbox)
    status: int | None = None
    _httpd: ThreadingHTTPServer | None = None

    @property
    def slack_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{SLACK_PATH}"

    @property
    def pagerduty_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PAGERDUTY_PATH}"

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path == SLACK_PATH:
                    server.slack.add(body)
                    status, reply = server.status or 200, b"ok"
                elif self.path == PAGERDUTY_PATH:
                    server.pagerduty.add(body)
                    status = server.status or 202
                    reply = json.dumps({"status": "success", "dedup_key": body.get("dedup_key")}).encode()
                else:
                    status, reply = 404, b"no such path"
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        threading.Thread(target=self._httpd.serve_forever, name="hook-server", daemon=True).start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


@pytest.fixture
def hook_server() -> Iterator[HookServer]:
    server = HookServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def alert_settings(smtp: SmtpServer, hooks: HookServer, sentry_dsn: str) -> dict[str, Any]:
    """Settings (as load_settings keywords) pointing every channel at the loopback servers."""
    return {
        "sentry_dsn": sentry_dsn,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "dr_alert_emails": ["ops@example.test", "admin@example.test"],
        "dr_slack_webhook": hooks.slack_url,
        "dr_pagerduty_key": PAGERDUTY_KEY,
        "dr_pagerduty_events_url": hooks.pagerduty_url,
        "health_check_timeout": 10,
    }


def alert_env(smtp: SmtpServer, hooks: HookServer, sentry_dsn: str) -> dict[str, str]:
    """The same as environment variables, for a spawned CLI."""
    values = alert_settings(smtp, hooks, sentry_dsn)
    return {
        key.upper(): ",".join(value) if isinstance(value, list) else str(value)
        for key, value in values.items()
    }
