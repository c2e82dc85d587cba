"""One conformance suite for the Storage protocol, run against memory, a local directory and S3 (moto).

Then the wrappers (RetryingStorage over FaultyStorage) and what only one backend promises.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from app.errors import ObjectNotFoundError, StorageError
from app.storage import ObjectInfo, PutOptions, Storage, exists, open_storage
from app.storage.faulty import FaultyStorage
from app.storage.local import TEMP_PREFIX, LocalStorage
from app.storage.memory import MemoryStorage
from app.storage.retry import RetryingStorage, is_transient
from app.storage.s3 import MiB, S3Storage
from tests.support.s3server import TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY, s3_client, shared_session

# Lowered from 64 MiB so that the multipart path is exercised by a 12 MiB object.
MULTIPART_THRESHOLD = 8 * MiB
PACK_A1 = "ab" + "1" * 62
PACK_A2 = "ab" + "2" * 62
PACK_C = "cd" + "3" * 62


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def s3_storage(url: str) -> S3Storage:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return S3Storage(
        parts.netloc,
        parts.path,
        endpoint_url=query["endpoint_url"][0],
        region=query["region"][0],
        multipart_threshold=MULTIPART_THRESHOLD,
        part_size=5 * MiB,
        session=shared_session(),
    )


@pytest.fixture(params=["memory", "local", pytest.param("s3", marks=pytest.mark.s3)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    backend: Storage
    if request.param == "memory":
        backend = MemoryStorage()
    elif request.param == "local":
        backend = LocalStorage(tmp_path / "repo")
    else:
        backend = s3_storage(request.getfixturevalue("s3_bucket_url"))
    yield backend
    backend.close()


def names(infos: Iterator[ObjectInfo]) -> list[str]:
    return sorted(info.name for info in infos)


# --- The conformance suite -------------------------------------------------------------------------


def test_implements_the_protocol(storage: Storage) -> None:
    assert isinstance(storage, Storage)
    assert storage.location
    assert storage.capabilities.ranged_reads


@pytest.mark.parametrize("size", [0, 1, 5 * MiB, 12 * MiB], ids=["empty", "1B", "5MiB", "12MiB-multipart"])
def test_put_get_round_trip(storage: Storage, size: int) -> None:
    data = random_bytes(size, seed=size)
    storage.put("packs", PACK_A1, data)
    assert storage.get("packs", PACK_A1) == data
    assert storage.stat("packs", PACK_A1) == ObjectInfo("packs", PACK_A1, size)
    assert exists(storage, "packs", PACK_A1)
    if size > 5 * MiB:  # across the boundary of the first multipart part
        assert storage.get("packs", PACK_A1, 5 * MiB - 10, 20) == data[5 * MiB - 10 : 5 * MiB + 10]


def test_ranged_get(storage: Storage) -> None:
    data = random_bytes(1000)
    storage.put("manifests", "m1", data)
    assert storage.get("manifests", "m1", 100, 200) == data[100:300]
    assert storage.get("manifests", "m1", 900) == data[900:]
    assert storage.get("manifests", "m1", 0, 1000) == data
    assert storage.get("manifests", "m1", 500, 0) == b""
    assert storage.get("manifests", "m1", 990, 50) == data[990:]  # a range past the end is cut short
    assert storage.get("manifests", "m1", 1000) == b""
    assert storage.get("manifests", "m1", 2000, 10) == b""
    with pytest.raises(StorageError, match="invalid byte range"):
        storage.get("manifests", "m1", -1, 10)


def test_stat_of_missing_object_is_none(storage: Storage) -> None:
    assert storage.stat("manifests", "nope") is None
    assert not exists(storage, "manifests", "nope")


@pytest.mark.parametrize(("offset", "length"), [(0, None), (10, 5), (0, 0)])
def test_get_of_missing_object_raises_not_found(storage: Storage, offset: int, length: int | None) -> None:
    with pytest.raises(ObjectNotFoundError) as raised:
        storage.get("manifests", "backup-404", offset, length)
    assert (raised.value.kind, raised.value.name) == ("manifests", "backup-404")
    assert "manifests/backup-404" in str(raised.value)
    assert storage.location in str(raised.value)


def test_list_by_kind_and_prefix(storage: Storage) -> None:
    for name in ("a1", "a2", "b1"):
        storage.put("manifests", name, name.encode() * 3)
    storage.put("units", "a1", b"unit")
    assert list(storage.list("manifests")) == [
        ObjectInfo("manifests", "a1", 6),
        ObjectInfo("manifests", "a2", 6),
        ObjectInfo("manifests", "b1", 6),
    ]
    assert names(storage.list("manifests", "a")) == ["a1", "a2"]
    assert names(storage.list("manifests", "b1")) == ["b1"]
    assert names(storage.list("manifests", "c")) == []
    assert list(storage.list("units")) == [ObjectInfo("units", "a1", 4)]
    assert names(storage.list("keys")) == []
    storage.delete("manifests", "a1")
    assert storage.get("units", "a1") == b"unit"  # kinds do not bleed into each other
    assert names(storage.list("manifests")) == ["a2", "b1"]


def test_packs_fan_out_is_invisible(storage: Storage) -> None:
    for name in (PACK_A1, PACK_A2, PACK_C):
        storage.put("packs", name, name.encode())
    storage.put("packs", "x", b"one-character name")
    assert names(storage.list("packs")) == sorted([PACK_A1, PACK_A2, PACK_C, "x"])
    assert names(storage.list("packs", "a")) == [PACK_A1, PACK_A2]
    assert names(storage.list("packs", "ab")) == [PACK_A1, PACK_A2]
    assert names(storage.list("packs", "ab1")) == [PACK_A1]
    assert names(storage.list("packs", PACK_C)) == [PACK_C]
    assert names(storage.list("packs", "x")) == ["x"]
    assert storage.get("packs", PACK_A2, 0, 2) == b"ab"
    storage.delete("packs", PACK_A1)
    assert names(storage.list("packs", "ab")) == [PACK_A2]


def test_overwrite_replaces_atomically(storage: Storage) -> None:
    versions = [bytes([n]) * (256 * 1024 + n * 4096) for n in range(1, 4)]
    storage.put("keys", "keyring", versions[0])
    stop = threading.Event()
    seen: list[bytes] = []

    def read() -> None:
        while not stop.is_set():
            seen.append(storage.get("keys", "keyring"))

    with ThreadPoolExecutor(4) as pool:
        readers = [pool.submit(read) for _ in range(2)]
        for i in range(12):
            pool.submit(storage.put, "keys", "keyring", versions[i % 3]).result()
        stop.set()
        for reader in readers:
            reader.result()
    assert seen and all(blob in versions for blob in seen)
    storage.put("keys", "keyring", b"final")
    assert storage.get("keys", "keyring") == b"final"
    assert list(storage.list("keys")) == [ObjectInfo("keys", "keyring", 5)]


def test_delete_is_idempotent(storage: Storage) -> None:
    storage.put("locks", "repo", b"lease")
    storage.delete("locks", "repo")
    assert storage.stat("locks", "repo") is None
    with pytest.raises(ObjectNotFoundError):
        storage.get("locks", "repo")
    storage.delete("locks", "repo")
    storage.delete("locks", "never-written")
    assert names(storage.list("locks")) == []


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("manifests", ""),
        ("manifests", "a/b"),
        ("manifests", ".."),
        ("manifests", "../escape"),
        ("manifests", "a\x00b"),
        ("manifests", ".hidden"),
        ("manifests", TEMP_PREFIX + "x"),
        ("manifests", "n" * 256),
        ("nope", "name"),
        ("", "name"),
        ("packs/..", "name"),
    ],
)
def test_invalid_addresses_are_refused(storage: Storage, kind: str, name: str) -> None:
    named = repr(name) if kind == "manifests" else repr(kind)
    for call in (
        lambda: storage.put(kind, name, b"data"),
        lambda: storage.get(kind, name),
        lambda: storage.stat(kind, name),
        lambda: storage.delete(kind, name),
    ):
        with pytest.raises(StorageError) as raised:
            call()
        assert not isinstance(raised.value, ObjectNotFoundError)
        assert named in str(raised.value)


@pytest.mark.parametrize(("kind", "prefix"), [("nope", ""), ("manifests", "a/"), ("manifests", "..")])
def test_invalid_listings_are_refused(storage: Storage, kind: str, prefix: str) -> None:
    with pytest.raises(StorageError):
        storage.list(kind, prefix)


def test_concurrent_puts_all_land(storage: Storage) -> None:
    blobs = {f"{n:064x}": random_bytes(64 * 1024, seed=n) for n in range(64)}

    def put_many(start: int) -> None:
        for name in list(blobs)[start::8]:
            storage.put("packs", name, blobs[name])

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(put_many, start) for start in range(8)]:
            future.result()
    assert names(storage.list("packs")) == sorted(blobs)
    for name, blob in blobs.items():
        assert storage.get("packs", name) == blob


# --- RetryingStorage over FaultyStorage -------------------------------------------------------------


def retrying(faulty: FaultyStorage, sleeps: list[float], attempts: int = 5) -> RetryingStorage:
    return RetryingStorage(
        faulty, attempts=attempts, base_delay=0.2, max_delay=1.0, sleep=sleeps.append, rng=random.Random(7)
    )


def test_retry_succeeds_after_transient_faults() -> None:
    faulty = FaultyStorage(MemoryStorage(), {"put": {1, 2}})
    sleeps: list[float] = []
    retrying(faulty, sleeps).put("manifests", "m", b"data")
    assert faulty.calls["put"] == 3
    assert faulty.inner.get("manifests", "m") == b"data"
    assert len(sleeps) == 2
    assert 0.1 <= sleeps[0] <= 0.2 and 0.2 <= sleeps[1] <= 0.4


def test_retry_gives_up_after_its_attempts() -> None:
    faulty = FaultyStorage(MemoryStorage(), lambda verb, _: verb == "put")
    sleeps: list[float] = []
    with pytest.raises(StorageError, match="injected fault: put of manifests/m"):
        retrying(faulty, sleeps, attempts=4).put("manifests", "m", b"data")
    assert faulty.calls["put"] == 4
    assert len(sleeps) == 3 and all(delay <= 1.0 for delay in sleeps)


def test_retry_does_not_repeat_not_found_or_permanent_errors() -> None:
    faulty = FaultyStorage(MemoryStorage(), {})
    sleeps: list[float] = []
    storage = retrying(faulty, sleeps)
    with pytest.raises(ObjectNotFoundError):
        storage.get("manifests", "missing")
    with pytest.raises(StorageError, match="invalid object name"):
        storage.put("manifests", "a/b", b"")
    assert (faulty.calls["get"], faulty.calls["put"], sleeps) == (1, 1, [])


def test_retry_survives_a_lost_answer_and_a_failed_listing() -> None:
    faulty = FaultyStorage(MemoryStorage(), {"put": 1, "list": 1}, after=True)
    sleeps: list[float] = []
    storage = retrying(faulty, sleeps)
    storage.put("manifests", "m", b"data")  # landed the first time, but the answer was lost
    assert names(storage.list("manifests")) == ["m"]
    assert (faulty.calls["put"], faulty.calls["list"], faulty.faults["put"]) == (2, 2, 1)


def test_faulty_storage_fails_only_the_nth_call() -> None:
    faulty = FaultyStorage(MemoryStorage(), {"put": 3})
    faulty.put("units", "1", b"")
    faulty.put("units", "2", b"")
    with pytest.raises(StorageError, match="injected fault"):
        faulty.put("units", "3", b"")
    faulty.put("units", "4", b"")
    assert names(faulty.list("units")) == ["1", "2", "4"]


# --- What one backend promises ----------------------------------------------------------------------


def test_local_layout_fans_out_packs_and_leaves_no_temp_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put("packs", PACK_A1, b"pack")
    storage.put("manifests", "m", b"1")
    storage.put("manifests", "m", b"2")
    assert (tmp_path / "packs" / "ab" / PACK_A1).read_bytes() == b"pack"
    assert (tmp_path / "manifests" / "m").read_bytes() == b"2"
    assert storage.location == tmp_path.as_uri()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(TEMP_PREFIX)]


def test_local_failed_put_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = LocalStorage(tmp_path)
    storage.put("manifests", "m", b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StorageError, match="cannot write object manifests/m") as raised:
        storage.put("manifests", "m", b"new")
    assert "Input/output error" in str(raised.value)
    monkeypatch.undo()
    assert storage.get("manifests", "m") == b"old"
    assert sorted(p.name for p in (tmp_path / "manifests").iterdir()) == ["m"]


def test_local_listing_ignores_temp_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put("manifests", "m", b"1")
    (tmp_path / "manifests" / f"{TEMP_PREFIX}abc").write_bytes(b"half written")
    assert names(storage.list("manifests")) == ["m"]


@pytest.mark.s3
def test_s3_storage_class_is_set(s3_bucket_url: str, s3_endpoint: str) -> None:
    storage = s3_storage(s3_bucket_url)
    storage.put("packs", PACK_A1, b"pack", PutOptions(storage_class="STANDARD_IA"))
    storage.put("packs", PACK_A2, random_bytes(12 * MiB), PutOptions(storage_class="GLACIER"))
    storage.put("manifests", "m", b"manifest")
    head = s3_client(s3_endpoint).head_object
    assert head(Bucket=storage.bucket, Key=f"repo/packs/{PACK_A1}")["StorageClass"] == "STANDARD_IA"
    assert head(Bucket=storage.bucket, Key=f"repo/packs/{PACK_A2}")["StorageClass"] == "GLACIER"
    assert head(Bucket=storage.bucket, Key="repo/manifests/m").get("StorageClass", "STANDARD") == "STANDARD"
    with pytest.raises(StorageError, match="archive storage class") as raised:
        storage.get("packs", PACK_A2)
    assert not isinstance(raised.value, ObjectNotFoundError)


@pytest.mark.s3
def test_s3_url_opens_a_working_storage_with_a_default_storage_class(
    s3_bucket_url: str, s3_endpoint: str
) -> None:
    storage = open_storage(s3_bucket_url + "&storage_class=STANDARD_IA&max_attempts=2")
    assert isinstance(storage, S3Storage)
    storage.put("config", "config", b"cfg")
    assert storage.get("config", "config") == b"cfg"
    head = s3_client(s3_endpoint).head_object(Bucket=storage.bucket, Key="repo/config/config")
    assert head["StorageClass"] == "STANDARD_IA"
    storage.close()


@pytest.mark.s3
def test_s3_errors_name_bucket_and_key_but_no_secret(s3_endpoint: str) -> None:
    storage = S3Storage("no-such-bucket", "repo", endpoint_url=s3_endpoint, region="us-east-1")
    failures = []
    for call in (
        lambda: storage.put("manifests", "m", b"data"),
        lambda: storage.get("manifests", "m"),
        lambda: list(storage.list("manifests")),
        lambda: storage.delete("manifests", "m"),
    ):
        with pytest.raises(StorageError) as raised:
            call()
        failures.append(raised.value)
    assert "bucket no-such-bucket does not exist" in str(failures[0])
    assert "BACKUP_STORAGE_URL" in str(failures[0])
    for failure in failures:
        text = f"{failure} {failure!r} {storage.location}"
        assert "no-such-bucket" in text
        assert TEST_SECRET_ACCESS_KEY not in text and TEST_ACCESS_KEY_ID not in text
    assert "s3://no-such-bucket/repo/manifests/m" in str(failures[1])


@pytest.mark.s3
def test_s3_without_credentials_says_what_to_set(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    storage = S3Storage("any-bucket", endpoint_url=s3_endpoint, region="us-east-1")
    with pytest.raises(StorageError, match="no usable AWS credentials") as raised:
        storage.put("manifests", "m", b"data")
    assert "AWS_SECRET_ACCESS_KEY" in str(raised.value)


@pytest.fixture(scope="module")
def offline_s3() -> Iterator[S3Storage]:
    """An S3Storage that is never called: its endpoint is unreachable and holds a password."""
    storage = S3Storage("bucket", "repo", endpoint_url="http://minio:pw@127.0.0.1:9", region="us-east-1")
    yield storage
    storage.close()


@pytest.mark.parametrize(
    ("code", "status", "says", "transient"),
    [
        ("SlowDown", 503, "S3 could not write s3://bucket/repo/packs/p", True),
        ("InternalError", 500, "S3 could not write", True),
        ("AccessDenied", 403, "access denied to write s3://bucket/repo/packs/p", False),
        ("", 403, "access denied", False),
        ("InvalidAccessKeyId", 403, "S3 refused the credentials used to write", False),
        ("SignatureDoesNotMatch", 403, "AWS_SECRET_ACCESS_KEY", False),
        ("NoSuchBucket", 404, "bucket bucket does not exist at http://minio:***@127.0.0.1:9", False),
        ("InvalidStorageClass", 400, "check BACKUP_STORAGE_URL", False),
    ],
)
def test_s3_errors_are_translated_and_classified(
    offline_s3: S3Storage, code: str, status: int, says: str, transient: bool
) -> None:
    response = {
        "Error": {"Code": code, "Message": "server says no"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    failure = offline_s3._translate(ClientError(response, "PutObject"), "write", "repo/packs/p")
    assert says in str(failure)
    assert "server says no" in str(failure) and ":pw@" not in str(failure)
    assert is_transient(failure) is transient
    unreachable = offline_s3._translate(EndpointConnectionError(endpoint_url="http://x"), "read", "k")
    assert "cannot reach S3 endpoint" in str(unreachable) and is_transient(unreachable)
