"""Copying one object to a region (app/replication/copy.py) on real in-memory and local storages."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import ConfigurationError, StorageError
from app.replication.copy import COPIED, MISSING, PRESENT, copy_object, sync_keyring
from app.replication.regions import configured_regions, is_enabled
from app.scheduling import build_schedule
from app.settings import load_settings
from app.storage.local import LocalStorage
from app.storage.memory import MemoryStorage


def test_a_copy_is_byte_for_byte_then_never_again_and_a_missing_object_is_named(tmp_path: Path) -> None:
    primary, region = MemoryStorage(), LocalStorage(tmp_path / "region")
    blob = bytes(range(256)) * 100
    primary.put("packs", "ab" * 32, blob)

    first = copy_object(primary, region, "packs", "ab" * 32, len(blob))
    assert (first.result, first.size) == (COPIED, len(blob))
    assert region.get("packs", "ab" * 32) == blob
    written = (tmp_path / "region" / "packs" / "ab" / ("ab" * 32)).stat().st_mtime_ns
    again = copy_object(primary, region, "packs", "ab" * 32, len(blob))
    assert again.result == PRESENT  # idempotent: the same size is there
    assert (tmp_path / "region" / "packs" / "ab" / ("ab" * 32)).stat().st_mtime_ns == written
    assert copy_object(primary, region, "packs", "cd" * 32, 10).result == MISSING


def test_a_size_the_catalog_does_not_expect_is_not_copied(tmp_path: Path) -> None:
    primary, region = MemoryStorage(), MemoryStorage()
    primary.put("wal", "db1-000000010000000000000001", b"x" * 100)
    with pytest.raises(StorageError, match="db1-000000010000000000000001 is 100 bytes in the primary"):
        copy_object(primary, region, "wal", "db1-000000010000000000000001", 99)
    assert region.stat("wal", "db1-000000010000000000000001") is None


def test_force_replaces_a_damaged_copy_of_the_right_size() -> None:
    primary, region = MemoryStorage(), MemoryStorage()
    primary.put("packs", "ef" * 32, b"good" * 10)
    region.put("packs", "ef" * 32, b"bad!" * 10)
    assert copy_object(primary, region, "packs", "ef" * 32, 40).result == PRESENT
    assert copy_object(primary, region, "packs", "ef" * 32, 40, force=True).result == COPIED
    assert region.get("packs", "ef" * 32) == b"good" * 10


def test_the_keyring_follows_a_rotation_in_place() -> None:
    primary, region = MemoryStorage(), MemoryStorage()
    primary.put("keys", "keyring", b'{"wrapped": "one"}')
    assert sync_keyring(primary, region) and not sync_keyring(primary, region)
    primary.put("keys", "keyring", b'{"wrapped": "two"}')  # same size, other bytes
    assert sync_keyring(primary, region) and region.get("keys", "keyring") == b'{"wrapped": "two"}'


def test_regions_and_the_beat_entry_follow_the_settings(tmp_path: Path) -> None:
    settings = load_settings(equisplit_dr_home=tmp_path, secondary_regions=["b-1", "a-1"])
    assert [r.name for r in configured_regions(settings)] == ["a-1", "b-1"]
    with pytest.raises(ConfigurationError, match="unknown region 'c-1': the secondary regions are a-1, b-1"):
        configured_regions(settings, "c-1")
    [entry] = [e for e in build_schedule(settings) if e.name == "replicate"]
    assert (entry.task, entry.queue, entry.every) == ("tasks.replicate.replicate", "replicate", 900)
    off = load_settings(equisplit_dr_home=tmp_path, backup_cross_region=False)
    assert not is_enabled(off) and not [e for e in build_schedule(off) if e.name == "replicate"]
