"""Storage URLs: parse BACKUP_STORAGE_URL into a backend, and redact credentials from URLs for messages."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from app.errors import ConfigurationError
from app.storage.base import Storage

ACCEPTED_FORMS = (
    "file:///absolute/path, /absolute/path, memory://, "
    "s3://bucket[/prefix][?endpoint_url=URL&region=NAME&storage_class=CLASS&max_attempts=N]"
)
S3_PARAMETERS = ("endpoint_url", "region", "storage_class", "max_attempts")

_SECRET_PARAMETER = re.compile(r"secret|passw|token|signature|credential|key", re.IGNORECASE)
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")


def redact_url(url: str) -> str:
    """`url` with any userinfo password and secret-looking query value replaced by `***`.

    Everything else is left exactly as written, so the result still reads as the URL the user gave.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/?#]*@", "//***@", url)
    redacted = url
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        user, has_password, _ = userinfo.partition(":")
        if has_password:
            redacted = redacted.replace(f"//{parts.netloc}", f"//{user}:***@{host}", 1)
    if parts.query:
        query = "&".join(_redact_parameter(item) for item in parts.query.split("&"))
        redacted = redacted.replace(f"?{parts.query}", f"?{query}", 1)
    return redacted


def _redact_parameter(item: str) -> str:
    name, has_value, value = item.partition("=")
    if not has_value:
        return item
    if _SECRET_PARAMETER.search(unquote(name)):
        return f"{name}=***"
    if "//" in unquote(value):  # a URL as a value, such as endpoint_url, may carry userinfo itself
        return f"{name}={redact_url(unquote(value))}"
    return item


def open_storage(url: str) -> Storage:
    """The backend a storage URL names; ConfigurationError (naming the redacted URL) if malformed."""
    if url.startswith("/"):
        return _local(url, url)
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise _invalid(url, str(error)) from None
    scheme = parts.scheme.lower()
    if parts.fragment:
        raise _invalid(url, "a storage URL has no #fragment")
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or parts.query:
            raise _invalid(url, "a file URL is file:///absolute/path, without host or query")
        return _local(url, unquote(parts.path))
    if scheme == "memory":
        if parts.netloc or parts.path or parts.query:
            raise _invalid(url, "a memory URL is exactly memory://")
        from app.storage.memory import MemoryStorage

        return MemoryStorage()
    if scheme == "s3":
        return _s3(url, parts)
    raise _invalid(url, f"unknown scheme {parts.scheme!r}" if parts.scheme else "no scheme")


def _local(url: str, path: str) -> Storage:
    if not path.startswith("/"):
        raise _invalid(url, "the path must be absolute")
    from app.storage.local import LocalStorage

    return LocalStorage(Path(path))


def _s3(url: str, parts: SplitResult) -> Storage:
    if "@" in parts.netloc:
        raise _invalid(
            url,
            "credentials do not belong in the URL",
            hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) instead",
        )
    bucket = parts.netloc
    if not bucket:
        raise _invalid(url, "the bucket is missing")
    if not _BUCKET.fullmatch(bucket):
        raise _invalid(url, f"{bucket!r} is not a valid bucket name")
    prefix = unquote(parts.path).strip("/")
    if ".." in prefix.split("/") or "\x00" in prefix:
        raise _invalid(url, "the prefix holds '..' or NUL")
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise _invalid(url, "the query is malformed") from None
    params = dict(pairs)
    unknown = [name for name, _ in pairs if name not in S3_PARAMETERS]
    if unknown or len(params) != len(pairs):
        what = f"unknown parameter {unknown[0]!r}" if unknown else "a parameter is repeated"
        raise _invalid(url, f"{what}; the parameters are {', '.join(S3_PARAMETERS)}")
    if any(not value for value in params.values()):
        raise _invalid(url, "a parameter has no value")

    from app.storage import s3

    endpoint_url = params.get("endpoint_url")
    if endpoint_url is not None:
        endpoint = urlsplit(endpoint_url)
        if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
            raise _invalid(url, "endpoint_url must be an http:// or https:// URL")
    storage_class = params.get("storage_class")
    if storage_class is not None and storage_class not in s3.STORAGE_CLASSES:
        raise _invalid(url, f"unknown storage_class; use one of {', '.join(sorted(s3.STORAGE_CLASSES))}")
    if storage_class in s3.ARCHIVE_STORAGE_CLASSES:
        raise _invalid(
            url,
            f"storage_class {storage_class} would make every object, the keyring "
            "included, unreadable until restored; archive packs by lifecycle rule instead",
        )
    attempts = params.get("max_attempts", "5")
    if not attempts.isdigit() or not 1 <= int(attempts) <= 20:
        raise _invalid(url, "max_attempts must be a whole number from 1 to 20")
    return s3.S3Storage(
        bucket,
        prefix,
        endpoint_url=endpoint_url,
        region=params.get("region"),
        storage_class=storage_class,
        max_attempts=int(attempts),
    )


def _invalid(url: str, reason: str, *, hint: str | None = None) -> ConfigurationError:
    return ConfigurationError(
        f"invalid storage URL {redact_url(url)}: {reason}", hint=hint or f"accepted forms: {ACCEPTED_FORMS}"
    )
