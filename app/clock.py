"""The one place that reads the wall clock, so tests can fix time."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    return None if value is None else as_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    """A time written by `iso` (or any ISO 8601 time; UTC if it names no offset)."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return as_utc(parsed)
