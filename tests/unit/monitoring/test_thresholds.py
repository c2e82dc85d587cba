"""Thresholds from settings, and the count of failed backups in a row."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from app.monitoring.backup_health import consecutive_failures
from app.monitoring.thresholds import thresholds
from app.settings import load_settings


def test_verified_restore_age_defaults_to_twice_the_drill_frequency(tmp_path: Path) -> None:
    weekly = thresholds(load_settings(equisplit_dr_home=tmp_path, dr_test_frequency="weekly"))
    assert weekly.verified_restore_max_age_seconds == 14 * 86400
    set_hours = thresholds(load_settings(equisplit_dr_home=tmp_path, alert_verified_restore_max_age_hours=36))
    assert set_hours.verified_restore_max_age_seconds == 36 * 3600
    assert weekly.stale_warning_seconds == 8 * 3600 and weekly.stale_critical_seconds == 12 * 3600


def test_failures_in_a_row_stop_at_the_newest_usable_backup() -> None:
    def row(state: str) -> Any:
        return SimpleNamespace(state=state, started_at=datetime(2026, 1, 1, tzinfo=UTC))

    newest_first = [
        row("failed"),
        row("running"),
        row("cancelled"),
        row("failed"),
        row("complete"),
        row("failed"),
    ]
    assert len(consecutive_failures(newest_first)) == 2
    assert consecutive_failures([row("partial"), row("failed")]) == []
