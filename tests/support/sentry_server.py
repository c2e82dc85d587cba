"""A loopback stand-in for Sentry's ingest endpoint: the real sentry-sdk POSTs envelopes to it.

`sentry_server` (fixture) yields a `SentryServer` with `.dsn` (`http://publickey@127.0.0.1:PORT/1`),
`.events` (error events, parsed), `.envelopes` (each request body, decompressed, as text) and
`wait_for(predicate, timeout)`.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


def parse_envelope(body: bytes) -> tuple[dict[str, Any], list[tuple[dict[str, Any], bytes]]]:
    """An envelope: a JSON header line, then items (a JSON header line and a payload of `length` bytes,
    or up to the next newline when the header gives no length)."""
    nl = body.find(b"\n")
    header = json.loads(body[: nl if nl >= 0 else len(body)] or b"{}")
    pos = len(body) if nl < 0 else nl + 1
    items: list[tuple[dict[str, Any], bytes]] = []
    while pos < len(body):
        nl = body.find(b"\n", pos)
        line = body[pos : nl if nl >= 0 else len(body)]
        pos = len(body) if nl < 0 else nl + 1
        if not line.strip():
            continue
        item_header = json.loads(line)
        length = item_header.get("length")
        if length is not None:
            payload = body[pos : pos + int(length)]
            pos += int(length)
            if body[pos : pos + 1] == b"\n":
                pos += 1
        else:
            nl = body.find(b"\n", pos)
            payload = body[pos : nl if nl >= 0 else len(body)]
            pos = len(body) if nl < 0 else nl + 1
        items.append((item_header, payload))
    return header, items


def _decode(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        import brotli  # type: ignore[import-not-found]  # only if the SDK found it too

        return bytes(brotli.decompress(body))
    raise ValueError(f"unknown Content-Encoding {encoding!r}")


@dataclass
class SentryServer:
    port: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    envelopes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cond: threading.Condition = field(init=False)
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._cond = threading.Condition(self._lock)

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.port}/1"

    def raw_text(self) -> str:
        with self._lock:
            return "\n".join(self.envelopes)

    def haystack(self) -> str:
        """Every envelope as sent, and every string inside the events as decoded from JSON (a bytes repr
        in a frame's locals is escaped in the raw text; search both)."""
        strings: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, str):
                strings.append(value)
            elif isinstance(value, dict):
                for k, v in value.items():
                    strings.append(str(k))
                    walk(v)
            elif isinstance(value, list):
                for v in value:
                    walk(v)
            else:
                strings.append(json.dumps(value))

        with self._lock:
            walk(self.events)
            return "\n".join([*self.envelopes, *strings])

    def record(self, body: bytes) -> None:
        header, items = parse_envelope(body)
        with self._cond:
            self.envelopes.append(body.decode("utf-8", errors="replace"))
            for item_header, payload in items:
                if item_header.get("type") in ("event", "error"):
                    event = json.loads(payload)
                    event.setdefault("_envelope_header", header)
                    self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> dict[str, Any]:
        """The first event (seen or still to come) that satisfies `predicate`; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    summary = [
                        (e.get("exception", {}).get("values", [{}])[-1].get("type"), e.get("tags"))
                        for e in self.events
                    ]
                    raise AssertionError(
                        f"no matching Sentry event in {timeout} s; got {summary}; "
                        f"server errors: {self.errors}"
                    )
                self._cond.wait(left)

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                parts = [p for p in self.path.split("?")[0].split("/") if p]
                status = 200
                if len(parts) != 3 or parts[0] != "api" or parts[2] != "envelope":
                    status = 404
                else:
                    try:
                        server.record(_decode(body, self.headers.get("Content-Encoding") or ""))
                    except Exception as exc:  # report it in wait_for's message, answer 400
                        server.errors.append(f"{type(exc).__name__}: {exc}")
                        status = 400
                reply = b"{}"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="sentry-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


@pytest.fixture
def sentry_server() -> Iterator[SentryServer]:
    server = SentryServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
