"""Storage URLs: which backend each form opens, what is refused, and what redaction hides."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import ConfigurationError
from app.storage import open_storage, redact_url
from app.storage.local import LocalStorage
from app.storage.memory import MemoryStorage
from app.storage.s3 import S3Storage


@pytest.mark.parametrize(
    ("url", "root"),
    [
        ("file:///var/backups/repo", "/var/backups/repo"),
        ("/var/backups/repo", "/var/backups/repo"),
        ("file://localhost/srv/repo", "/srv/repo"),
        ("file:///srv/with%20space", "/srv/with space"),
    ],
)
def test_file_urls_and_absolute_paths_open_local_storage(url: str, root: str) -> None:
    storage = open_storage(url)
    assert isinstance(storage, LocalStorage)
    assert storage.root == Path(root)


def test_memory_url_opens_memory_storage() -> None:
    assert isinstance(open_storage("memory://"), MemoryStorage)


def test_s3_url_with_every_parameter() -> None:
    storage = open_storage(
        "s3://my-bucket/team/repo/?endpoint_url=http://127.0.0.1:9000&region=eu-west-1"
        "&storage_class=STANDARD_IA&max_attempts=3"
    )
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix, storage.endpoint_url) == (
        "my-bucket",
        "team/repo",
        "http://127.0.0.1:9000",
    )
    assert storage.storage_class == "STANDARD_IA"
    config = storage._client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert config.max_pool_connections == 32
    assert storage._client.meta.region_name == "eu-west-1"
    assert storage.location == "s3://my-bucket/team/repo?endpoint_url=http://127.0.0.1:9000"
    storage.close()


def test_s3_url_defaults() -> None:
    storage = open_storage("s3://my-bucket")
    assert isinstance(storage, S3Storage)
    assert (storage.prefix, storage.endpoint_url, storage.storage_class) == ("", None, None)
    assert storage._client.meta.config.retries["total_max_attempts"] == 5
    assert storage._key("packs", "ab12") == "packs/ab12"
    assert storage.location == "s3://my-bucket"
    storage.close()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://host/repo", "unknown scheme 'ftp'"),
        ("relative/path", "no scheme"),
        ("file://relative/path", "without host or query"),
        ("file:relative/path", "must be absolute"),
        ("file:///srv/repo?x=1", "without host or query"),
        ("memory://name", "exactly memory://"),
        ("s3://", "bucket is missing"),
        ("s3:///prefix", "bucket is missing"),
        ("s3://Bad_Bucket!/p", "not a valid bucket name"),
        ("s3://bucket/p?colour=blue", "unknown parameter 'colour'"),
        ("s3://bucket/p?region=a&region=b", "repeated"),
        ("s3://bucket/p?region=", "has no value"),
        ("s3://bucket/p?max_attempts=many", "max_attempts"),
        ("s3://bucket/p?max_attempts=0", "max_attempts"),
        ("s3://bucket/p?storage_class=SHINY", "unknown storage_class"),
        ("s3://bucket/p?storage_class=GLACIER", "unreadable until restored"),
        ("s3://bucket/p?endpoint_url=localhost:9000", "http:// or https://"),
        ("s3://bucket/a/../b", "'..'"),
        ("s3://bucket/p#frag", "fragment"),
    ],
)
def test_malformed_urls_are_refused_with_the_accepted_forms(url: str, reason: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        open_storage(url)
    message = str(raised.value)
    assert f"invalid storage URL {url}" in message
    assert reason in message
    assert "file:///absolute/path" in message and "s3://bucket" in message and "memory://" in message


def test_credentials_in_an_s3_url_are_refused_without_repeating_the_secret() -> None:
    with pytest.raises(ConfigurationError) as raised:
        open_storage("s3://AKIAEXAMPLE:wJalrXUtnFEMI%2FK7MDENG@bucket/repo")
    message = str(raised.value)
    assert "wJalrXUtnFEMI" not in message
    assert "s3://AKIAEXAMPLE:***@bucket/repo" in message
    assert "AWS_SECRET_ACCESS_KEY" in message


def test_a_refused_endpoint_url_does_not_repeat_its_password() -> None:
    with pytest.raises(ConfigurationError) as raised:
        open_storage("s3://bucket/p?endpoint_url=http://minio:hunter2@10.0.0.5:9000&colour=blue")
    assert "hunter2" not in str(raised.value)
    assert "endpoint_url=http://minio:***@10.0.0.5:9000" in str(raised.value)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("s3://bucket/repo", "s3://bucket/repo"),
        ("s3://user:secret@bucket/repo", "s3://user:***@bucket/repo"),
        ("redis://:p%40ss@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://backup@db/catalog", "postgresql://backup@db/catalog"),
        (
            "https://h/x?token=abc&region=eu&X-Amz-Signature=f00",
            "https://h/x?token=***&region=eu&X-Amz-Signature=***",
        ),
        ("s3://b?aws_secret_access_key=s3cr3t", "s3://b?aws_secret_access_key=***"),
        (
            "s3://b/p?endpoint_url=http://u:pw@minio:9000&region=x",
            "s3://b/p?endpoint_url=http://u:***@minio:9000&region=x",
        ),
        ("http://u:pw@[::1", "http://***@[::1"),
        ("/srv/repo", "/srv/repo"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
