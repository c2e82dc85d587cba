"""A JSON POST for the webhook channels, its failures named without the URL (it holds the secret)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from app.errors import AlertDeliveryError


def post_json(channel: str, what: str, url: str, body: dict[str, Any], timeout: float) -> bytes:
    return request_json(channel, what, url, body, timeout)


def request_json(
    channel: str,
    what: str,
    url: str,
    body: dict[str, Any] | None,
    timeout: float,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> bytes:
    """One HTTP request with a JSON body (or none); the answer's bytes. Failures name the channel and
    the answer, never the URL or a header (they hold the secret)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", "User-Agent": "equisplit-dr", **(headers or {})},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        raise AlertDeliveryError(
            f"{channel}: {what} answered HTTP {exc.code}",
            hint="check the channel's setting (the URL or key itself is not shown)",
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise AlertDeliveryError(
            f"{channel}: {what} could not be reached ({reason.__class__.__name__})",
            hint="check the channel's setting and the network (the URL or key itself is not shown)",
        ) from None
