"""Object Lock dates of archives (app/archive/lock.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from app.archive.lock import add_years, retain_until
from app.settings import load_settings


def test_a_lock_lasts_the_archive_years_from_the_start() -> None:
    assert add_years(datetime(2026, 12, 5, 4, 0, tzinfo=UTC), 7) == datetime(2033, 12, 5, 4, 0, tzinfo=UTC)
    assert add_years(datetime(2028, 2, 29, tzinfo=UTC), 7) == datetime(2035, 3, 1, tzinfo=UTC)


def test_only_an_archive_on_storage_with_locks_and_the_setting_on_is_locked() -> None:
    started = datetime(2026, 12, 5, tzinfo=UTC)
    on = load_settings(backup_archive_object_lock=True, backup_retention_archive_years=3)
    off = load_settings(backup_archive_object_lock=False)
    assert retain_until(on, started, archive=True, storage_locks=True) == datetime(2029, 12, 5, tzinfo=UTC)
    assert retain_until(on, started, archive=False, storage_locks=True) is None
    assert retain_until(on, started, archive=True, storage_locks=False) is None
    assert retain_until(off, started, archive=True, storage_locks=True) is None
