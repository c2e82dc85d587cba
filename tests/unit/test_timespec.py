"""`--since` / `--last` values: durations and ISO times, and a clear error for what is not a time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.errors import ConfigurationError
from app.timespec import parse_since

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def test_durations_and_iso_times() -> None:
    assert parse_since("24h", NOW) == datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    assert parse_since("2026-11-27T10:30:00Z", NOW) == datetime(2026, 11, 27, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize("text", ["999999999999d", "800000d", "9" * 30 + "s"])
def test_a_duration_past_the_year_1_is_a_configuration_error(text: str) -> None:
    with pytest.raises(ConfigurationError, match=text) as caught:
        parse_since(text, NOW)
    assert caught.value.exit_code == 2
