"""moto's S3 server on a free loopback port for the session, and a fresh bucket per test.

Use it from a conftest: `from tests.support.s3server import s3_endpoint, s3_bucket_url  # noqa: F401`,
and mark the tests `@pytest.mark.s3`. The session gets dummy AWS credentials (TEST_ACCESS_KEY_ID,
TEST_SECRET_ACCESS_KEY) and no AWS config file, so no real account is ever reached.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

TEST_ACCESS_KEY_ID = "AKIATESTEQUISPLIT0000"
TEST_SECRET_ACCESS_KEY = "test-secret-key-that-must-never-appear-in-a-message"
TEST_REGION = "us-east-1"

# Variables that could point boto3 at a real account or endpoint.
_CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


@functools.cache
def shared_session() -> boto3.session.Session:
    """One boto3 session for tests under `s3_endpoint`: a client made from it skips reloading the service
    models (~0.15 s). It keeps the credentials it first finds, so `s3_endpoint` renews it."""
    return boto3.session.Session()


_clients: dict[str, Any] = {}


def s3_client(endpoint: str) -> Any:
    """A plain boto3 S3 client for the test server, to arrange or inspect what a test needs."""
    if endpoint not in _clients:
        _clients[endpoint] = shared_session().client("s3", endpoint_url=endpoint, region_name=TEST_REGION)
    return _clients[endpoint]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start moto's S3 server on 127.0.0.1 and a free port; yield its URL; stop it at session end."""
    no_config = tmp_path_factory.mktemp("aws") / "absent"
    with pytest.MonkeyPatch.context() as env:
        for name in _CLEARED:
            env.delenv(name, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY_ID)
        env.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET_ACCESS_KEY)
        env.setenv("AWS_DEFAULT_REGION", TEST_REGION)
        env.setenv("AWS_CONFIG_FILE", str(no_config))
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(no_config))
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        request_log = logging.getLogger("werkzeug")  # one line per request drowns a failure's output
        env.setattr(request_log, "level", logging.WARNING)
        shared_session.cache_clear()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield f"http://{host}:{port}"
        finally:
            client = _clients.pop(f"http://{host}:{port}", None)
            if client is not None:
                client.close()
            shared_session.cache_clear()
            server.stop()


@pytest.fixture
def s3_bucket_url(s3_endpoint: str) -> Iterator[str]:
    """Create an empty bucket with a unique name; yield its storage URL; empty and delete it after."""
    bucket = f"test-{uuid.uuid4().hex[:20]}"
    client = s3_client(s3_endpoint)
    client.create_bucket(Bucket=bucket)
    try:
        yield f"s3://{bucket}/repo?endpoint_url={s3_endpoint}&region={TEST_REGION}"
    finally:
        _remove_bucket(client, bucket)


def _remove_bucket(client: Any, bucket: str) -> None:
    # moto keeps every object in RAM for the whole session: free each test's objects.
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    client.delete_bucket(Bucket=bucket)


class RestartableS3Server:
    """A second moto S3 endpoint on a fixed loopback port that a test stops and starts again (a region
    that goes down and comes back). It serves the same in-process moto state as `s3_endpoint`, so its
    buckets keep their objects across a restart, as a real region's would."""

    def __init__(self) -> None:
        from tests.support.ports import free_port

        self.port = free_port()
        self.server: ThreadedMotoServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def second_s3_endpoint(s3_endpoint: str) -> Iterator[RestartableS3Server]:
    """A second, restartable moto endpoint (started), stopped at the end of the test."""
    server = RestartableS3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()
