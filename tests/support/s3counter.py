"""A counted S3 endpoint: moto's S3 application behind a WSGI middleware that records every request it is
sent, on its own loopback port, in this test process. It serves the same in-process moto state as
`s3_endpoint` (a bucket made through either is seen by both), so a test makes a bucket, points a system
(and the worker processes it forks, and CLI subprocesses) at this endpoint and counts what they asked.

A request is recorded when it arrives, before it is answered, so once a client has its last response
every request it made is in `requests`: no waiting, no log parsing.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import pytest
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from tests.support.s3server import TEST_REGION, _remove_bucket, s3_client


@dataclass(frozen=True)
class Request:
    """One request: its verb (LIST for a listing), bucket, key and query."""

    verb: str
    bucket: str
    key: str
    query: str

    @property
    def kind(self) -> str:
        """The first component of the key after the repository's prefix (`packs`, `keys`, ...), or of a
        listing's prefix."""
        if self.verb == "LIST":
            for item in self.query.split("&"):
                if item.startswith("prefix="):
                    return unquote(item[len("prefix=") :]).split("/")[1]
            return ""
        return self.key.split("/")[1] if "/" in self.key else self.key


class CountedS3:
    """The endpoint and what it was asked."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self.endpoint = ""

    def start(self) -> None:
        moto = DomainDispatcherApplication(create_backend_app)

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            path = environ.get("PATH_INFO", "")
            query = environ.get("QUERY_STRING", "")
            bucket, _, key = path.lstrip("/").partition("/")
            method = environ["REQUEST_METHOD"]
            verb = "LIST" if method == "GET" and (not key or "list-type=" in query) else method
            with self._lock:
                self.requests.append(Request(verb, bucket, unquote(key), query))
            return moto(environ, start_response)

        self._server = make_server("127.0.0.1", 0, app, True, request_handler=MotoRequestHandler)
        host, port = self._server.server_address[:2]
        self.endpoint = f"http://{host!s}:{port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def taken(self, bucket: str) -> list[Request]:
        """The requests to `bucket` since the last call (or `clear`), which forgets them."""
        with self._lock:
            mine = [r for r in self.requests if r.bucket == bucket]
            self.requests = [r for r in self.requests if r.bucket != bucket]
        return mine


def tally(requests: list[Request]) -> Counter[str]:
    """Counts by `VERB kind`: {"GET packs": 3, "PUT manifests": 1, ...}."""
    return Counter(f"{r.verb} {r.kind}" for r in requests)


@dataclass
class CountedBucket:
    counted: CountedS3
    bucket: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/repo?endpoint_url={self.counted.endpoint}&region={TEST_REGION}"

    def taken(self) -> list[Request]:
        return self.counted.taken(self.bucket)


@pytest.fixture(scope="session")
def counted_s3(s3_endpoint: str) -> Iterator[CountedS3]:
    """The counted endpoint for the session (after `s3_endpoint`, whose credentials it uses)."""
    counted = CountedS3()
    counted.start()
    try:
        yield counted
    finally:
        counted.stop()


@pytest.fixture
def counted_bucket(counted_s3: CountedS3, s3_endpoint: str) -> Iterator[CountedBucket]:
    """A fresh bucket on the counted endpoint, emptied and deleted after the test."""
    import uuid

    bucket = f"counted-{uuid.uuid4().hex[:20]}"
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket=bucket)
    counted_s3.taken(bucket)
    try:
        yield CountedBucket(counted_s3, bucket)
    finally:
        _remove_bucket(client, bucket)
