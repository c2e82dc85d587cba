"""S3 storage: objects at `<prefix>/<kind>/<name>` in a bucket, through boto3."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, cast

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from app.errors import ConfigurationError, ObjectNotFoundError, StorageError
from app.storage.base import Capabilities, ObjectInfo, PutOptions, ThawState
from app.storage.local import check_address, check_kind, check_prefix, check_range
from app.storage.retry import permanent
from app.storage.url import redact_url

MiB = 1024 * 1024
#: S3 refuses multipart parts smaller than this, except the last.
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000

# fmt: off
STORAGE_CLASSES = frozenset({
    "STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "REDUCED_REDUNDANCY",
    "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE", "EXPRESS_ONEZONE", "OUTPOSTS", "SNOW",
})
#: Classes whose objects cannot be read until restored: never a default for every object.
ARCHIVE_STORAGE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException", "InternalError",
                    "ServiceUnavailable", "RequestTimeTooSkewed", "OperationAborted"}
_CREDENTIAL_CODES = ["InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                     "TokenRefreshRequired"]
# fmt: on
_CREDENTIALS_REFUSED = (
    "S3 refused the credentials used to {verb} {where}",
    "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)",
)
#: Error code -> (message, hint) of errors that retrying cannot fix. No field holds a credential.
_PERMANENT_CODES = {
    "NoSuchBucket": (
        "cannot {verb} {where}: bucket {bucket} does not exist at {endpoint}",
        "create it or fix BACKUP_STORAGE_URL",
    ),
    "InvalidObjectState": (
        "object {where} is in an archive storage class and cannot be read",
        "restore it from the archive tier first (S3 RestoreObject)",
    ),
    "AccessDenied": (
        "access denied to {verb} {where}",
        "grant the credentials s3:GetObject, PutObject, DeleteObject and ListBucket on the bucket, "
        "or fix BACKUP_STORAGE_URL",
    ),
    **dict.fromkeys(_CREDENTIAL_CODES, _CREDENTIALS_REFUSED),
}


_loader_lock = threading.Lock()
_loader: Any = None


def new_session() -> boto3.session.Session:
    """A boto3 session that shares this process's botocore data loader: the first client a process makes
    loads S3's service model and endpoint rules (~75 ms of CPU), every later one takes them from the
    loader (~9 ms). The session itself is new, so it finds credentials afresh (a process whose
    environment changed is not held to the first credentials it saw)."""
    global _loader
    core = botocore.session.Session()
    with _loader_lock:
        if _loader is None:
            _loader = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _loader)
    return boto3.session.Session(botocore_session=core)


def warm_up() -> None:
    """Load S3's service model into this process's shared loader (new_session), without credentials or
    connections: a fork server does this once, so each worker forked from it makes its client cheaply."""
    new_session().client("s3", region_name="us-east-1").close()


class S3Storage:
    """Objects in an S3 bucket (AWS or any S3-compatible endpoint); credentials from boto3's chain.

    A put up to `multipart_threshold` bytes is one PutObject; a larger one a multipart upload of
    `part_size` parts, aborted if any part fails, so a reader never sees a partial object. `session`
    defaults to a new boto3 session (sharing the process's service models: new_session), which finds
    credentials by boto3's usual chain.

    Responses are not checksummed by boto3 (`response_checksum_validation="when_required"`): every
    object but the keyring is an AES-GCM envelope whose tag a reader checks, and the keyring is one too
    (under the master key), so damage in transit or at rest is found on opening anyway; checking a CRC
    of each 16 MiB pack again cost ~7 ms of CPU per GET. Over plain http (an endpoint on a trusted
    network, such as MinIO or moto on loopback) a PUT carries no CRC32 either: SigV4 signs the SHA-256
    of every http body and the server checks it, so the CRC was a second checksum of the same bytes
    (~4 ms of CPU per 16 MiB pack). Over https both stay as boto3 sends them.
    """

    capabilities = Capabilities(ranged_reads=True, storage_classes=True, durable_put=True, remote=True)

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        storage_class: str | None = None,
        max_attempts: int = 5,
        multipart_threshold: int = 64 * MiB,
        part_size: int = 16 * MiB,
        max_pool_connections: int = 32,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        session: boto3.session.Session | None = None,
    ) -> None:
        if not bucket:
            raise ConfigurationError("an S3 storage needs a bucket name")
        if part_size < MIN_PART_SIZE:
            raise ConfigurationError(f"S3 part size {part_size} is below the minimum of {MIN_PART_SIZE}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.storage_class = storage_class
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        if storage_class is not None:
            _check_storage_class(storage_class)
        plain_http = bool(endpoint_url) and str(endpoint_url).lower().startswith("http://")
        config = Config(
            retries={"mode": "standard", "total_max_attempts": max_attempts},  # the first call included
            max_pool_connections=max_pool_connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # S3-compatible servers at a custom endpoint seldom resolve bucket.host names.
            s3={"addressing_style": "path"} if endpoint_url else None,
            response_checksum_validation="when_required",
            request_checksum_calculation="when_required" if plain_http else "when_supported",
            tcp_keepalive=True,
        )
        self._client: Any = (session or new_session()).client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config
        )

    @property
    def location(self) -> str:
        url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return redact_url(f"{url}?endpoint_url={self.endpoint_url}" if self.endpoint_url else url)

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}/{kind}/{name}" if self.prefix else f"{kind}/{name}"

    def put(self, kind: str, name: str, data: bytes | memoryview, options: PutOptions | None = None) -> None:
        check_address(kind, name)
        key = self._key(kind, name)
        storage_class = (options.storage_class if options else None) or self.storage_class
        extra: dict[str, Any] = {}
        if storage_class is not None:
            _check_storage_class(storage_class)
            extra["StorageClass"] = storage_class
        if options is not None and options.retain_until is not None:
            extra["ObjectLockMode"] = "COMPLIANCE"
            extra["ObjectLockRetainUntilDate"] = options.retain_until
            extra["ChecksumAlgorithm"] = "CRC32"  # S3 wants a checksum (or Content-MD5) with a lock
        try:
            if len(data) <= self.multipart_threshold:
                self._client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data), **extra)
            else:
                self._put_multipart(key, memoryview(data), extra)
        except (BotoCoreError, ClientError) as error:
            raise self._translate(error, "write", key) from error

    def _put_multipart(self, key: str, data: memoryview, extra: dict[str, Any]) -> None:
        part_size = max(self.part_size, -(-len(data) // MAX_PARTS))
        upload = self._client.create_multipart_upload(Bucket=self.bucket, Key=key, **extra)
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, len(data), part_size), start=1):
                body = bytes(data[start : start + part_size])
                checksum = {"ChecksumAlgorithm": extra["ChecksumAlgorithm"]} if "ChecksumAlgorithm" in extra else {}
                sent = self._client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body, **checksum
                )
                part = {"PartNumber": number, "ETag": sent["ETag"]}
                if sent.get("ChecksumCRC32"):
                    part["ChecksumCRC32"] = sent["ChecksumCRC32"]
                parts.append(part)
            self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            # The first error is the one to report; a lifecycle rule reaps parts an abort leaves.
            with contextlib.suppress(BotoCoreError, ClientError):
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    def get(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        check_address(kind, name)
        check_range(offset, length)
        if length == 0:  # S3 has no empty range: check the object exists instead
            if self.stat(kind, name) is None:
                raise ObjectNotFoundError(kind, name, self.location)
            return b""
        key = self._key(kind, name)
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            request["Range"] = f"bytes={offset}-{end}"
        try:
            response = self._client.get_object(**request)
            with response["Body"] as body:
                return cast(bytes, body.read())
        except ClientError as error:
            code = _code(error)
            if code in _NOT_FOUND:
                raise ObjectNotFoundError(kind, name, self.location) from None
            if code == "InvalidRange":  # the range starts at or past the end
                return b""
            raise self._translate(error, "read", key) from error
        except BotoCoreError as error:
            raise self._translate(error, "read", key) from error

    def _head(self, kind: str, name: str) -> dict[str, Any] | None:
        """HEAD of the object; None when it does not exist."""
        check_address(kind, name)
        key = self._key(kind, name)
        try:
            head: dict[str, Any] = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _code(error) in _NOT_FOUND:
                return None
            raise self._translate(error, "stat", key) from error
        except BotoCoreError as error:
            raise self._translate(error, "stat", key) from error
        return head

    def stat(self, kind: str, name: str) -> ObjectInfo | None:
        head = self._head(kind, name)
        if head is None:
            return None
        return ObjectInfo(
            kind,
            name,
            int(head["ContentLength"]),
            head.get("StorageClass", "STANDARD"),
            head.get("ObjectLockRetainUntilDate") if head.get("ObjectLockMode") == "COMPLIANCE" else None,
        )

    def thaw_state(self, kind: str, name: str) -> ThawState | None:
        """From HEAD: the storage class, and the `Restore` header (`ongoing-request="true"` while a
        restore runs, `"false"` once the temporary copy is readable)."""
        head = self._head(kind, name)
        if head is None:
            return None
        if head.get("StorageClass") not in ARCHIVE_STORAGE_CLASSES:
            return ThawState(frozen=False)
        restore = str(head.get("Restore") or "")
        if 'ongoing-request="false"' in restore:
            return ThawState(frozen=False)
        return ThawState(frozen=True, thawing='ongoing-request="true"' in restore)

    def request_thaw(self, kind: str, name: str, days: int, tier: str) -> None:
        check_address(kind, name)
        key = self._key(kind, name)
        request = {"Days": days, "GlacierJobParameters": {"Tier": tier}}
        try:
            self._client.restore_object(Bucket=self.bucket, Key=key, RestoreRequest=request)
        except ClientError as error:
            # Already under way (409), or a class with nothing to restore: the object is, or will be, readable.
            if _code(error) not in ("RestoreAlreadyInProgress", "InvalidObjectState"):
                raise self._translate(error, "restore", key) from error
        except BotoCoreError as error:
            raise self._translate(error, "restore", key) from error

    def list(self, kind: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object of `kind` whose name starts with `prefix`, in name order."""
        check_kind(kind)
        check_prefix(kind, prefix)
        return self._list(kind, prefix)

    def _list(self, kind: str, prefix: str) -> Iterator[ObjectInfo]:
        base = self._key(kind, "")
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base + prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    name = item["Key"][len(base) :]
                    if name and "/" not in name:  # not ours: keys in "subfolders" of a kind
                        yield ObjectInfo(kind, name, int(item["Size"]), item.get("StorageClass"))
        except (BotoCoreError, ClientError) as error:
            raise self._translate(error, "list", base + prefix + "*") from error

    def delete(self, kind: str, name: str) -> None:
        check_address(kind, name)
        key = self._key(kind, name)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _code(error) not in _NOT_FOUND:
                raise self._translate(error, "delete", key) from error
        except BotoCoreError as error:
            raise self._translate(error, "delete", key) from error

    def close(self) -> None:
        self._client.close()

    def _translate(self, error: BotoCoreError | ClientError, verb: str, key: str) -> StorageError:
        """A StorageError naming the bucket, key and a remedy; never a credential."""
        where = f"s3://{self.bucket}/{key}"
        endpoint = redact_url(self.endpoint_url or "AWS S3")
        if isinstance(error, ClientError):
            code = _code(error)
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            detail = f"{code or status}: {error.response.get('Error', {}).get('Message', '')}".rstrip(": ")
            known = _PERMANENT_CODES.get(code) or (
                _PERMANENT_CODES["AccessDenied"] if status == 403 else None
            )
            if known:
                message = known[0].format(verb=verb, where=where, bucket=self.bucket, endpoint=endpoint)
                return permanent(StorageError(message, detail=detail, hint=known[1]))
            failure = StorageError(
                f"S3 could not {verb} {where}",
                detail=detail,
                hint="check BACKUP_STORAGE_URL (bucket, region, endpoint_url)",
            )
            transient = status >= 500 or status in (408, 429) or code in _TRANSIENT_CODES
            return failure if transient else permanent(failure)
        if isinstance(error, NoCredentialsError | PartialCredentialsError):
            hint = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            return permanent(StorageError(f"no usable AWS credentials to {verb} {where}", hint=hint))
        if isinstance(error, ParamValidationError):
            return permanent(StorageError(f"invalid S3 request to {verb} {where}", detail=str(error)))
        if isinstance(error, EndpointConnectionError):
            return StorageError(
                f"cannot reach S3 endpoint {endpoint} to {verb} {where}",
                hint="check the network and endpoint_url in BACKUP_STORAGE_URL",
            )
        return StorageError(f"S3 {verb} of {where} failed", detail=type(error).__name__)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _check_storage_class(storage_class: str) -> None:
    if storage_class not in STORAGE_CLASSES:
        raise ConfigurationError(
            f"unknown S3 storage class {storage_class!r}", hint=f"use one of {sorted(STORAGE_CLASSES)}"
        )
