"""Parsing `--since 24h` / `--last 7d` / an ISO timestamp into an aware UTC datetime."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from app import clock
from app.errors import ConfigurationError

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`24h`, `30m`, `7d`, `2w`, `90s`, or an ISO 8601 time (UTC if no offset is given)."""
    value = text.strip()
    match = _RELATIVE.match(value)
    if match:
        try:
            return (now or clock.now()) - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        except OverflowError:  # before year 1, or past what a timedelta holds
            raise ConfigurationError(
                f"{text!r} reaches back before the year 1",
                hint="use a shorter duration, such as 3650d, or an ISO time",
            ) from None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(
            f"{text!r} is not a time",
            hint="use a duration such as 24h, 30m, 7d, or an ISO time 2026-11-27T10:30:00Z",
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
