"""The local metadata cache (app/repo/cache.py): the config and manifest chunks are read from storage
once, then from the cache; a copy that does not open (damaged, planted, another repository's) is never
used: it is read from storage again and replaced; a repository re-created at the same location starts
with an empty cache; the cache stays under its bound."""

from __future__ import annotations

import os
import random
from pathlib import Path

from app.repo.cache import MetadataCache
from app.repo.format import Kind
from app.repo.keys import MasterKey
from app.repo.repository import Repository
from app.storage.memory import MemoryStorage
from tests.unit.repo.support import RecordingStorage
from tests.unit.repo.test_manifest import BACKUP_ID, tree_entries, write_v2_manifest


def reads(recording: RecordingStorage, kind: str) -> list[str]:
    return [name for verb, k, name in recording.calls if verb == "get" and k == kind]


def test_the_config_is_read_from_storage_once_then_from_the_cache(
    storage: MemoryStorage, master: MasterKey, tmp_path: Path
) -> None:
    Repository.init(storage, master)
    recording = RecordingStorage(storage)
    first = Repository.open(recording, master, cache_root=tmp_path)
    again = Repository.open(recording, master, cache_root=tmp_path)
    assert reads(recording, Kind.CONFIG) == ["config"]  # the second open took it from the cache
    assert reads(recording, Kind.KEYS) == ["keyring", "keyring"]  # never cached: it shows a rotation
    assert again.config == first.config


def test_a_damaged_or_foreign_cached_config_is_read_from_storage_and_replaced(
    storage: MemoryStorage, master: MasterKey, tmp_path: Path
) -> None:
    repo = Repository.init(storage, master)
    Repository.open(storage, master, cache_root=tmp_path)
    copy = tmp_path / repo.id / "config"
    stored = storage.get(Kind.CONFIG, "config")
    other = MemoryStorage()
    Repository.init(other, master)
    for planted in (stored[:-1] + bytes([stored[-1] ^ 1]), other.get(Kind.CONFIG, "config")):
        copy.write_bytes(planted)
        recording = RecordingStorage(storage)
        assert Repository.open(recording, master, cache_root=tmp_path).config == repo.config
        assert reads(recording, Kind.CONFIG) == ["config"]
        assert copy.read_bytes() == stored


def test_a_repository_recreated_at_the_same_location_never_takes_the_old_copies(
    storage: MemoryStorage, master: MasterKey, tmp_path: Path
) -> None:
    old = Repository.init(storage, master)
    Repository.open(storage, master, cache_root=tmp_path)
    for kind in (Kind.KEYS, Kind.CONFIG):
        for info in list(storage.list(kind)):
            storage.delete(kind, info.name)
    new = Repository.init(storage, master, pack_target_size=1 << 20)
    recording = RecordingStorage(storage)
    opened = Repository.open(recording, master, cache_root=tmp_path)
    assert new.id != old.id and opened.config["repository_id"] == new.id
    assert opened.pack_target_size == 1 << 20 and reads(recording, Kind.CONFIG) == ["config"]


def test_manifest_chunks_come_from_the_cache_and_a_damaged_copy_from_storage(
    storage: MemoryStorage, master: MasterKey, rng: random.Random, tmp_path: Path
) -> None:
    Repository.init(storage, master)
    repo = Repository.open(storage, master, cache_root=tmp_path)
    chunks = write_v2_manifest(repo, rng, tree_entries(rng, 3000), packs=2)
    expected = repo.read_manifest(BACKUP_ID)  # from storage: caches nothing
    assert not (tmp_path / repo.id / "chunks").exists()
    recording = RecordingStorage(storage)
    repo.storage = recording
    assert repo.read_manifest(BACKUP_ID, cached=True) == expected  # read through, then cached
    assert sorted(reads(recording, Kind.PACKS)) == sorted({c.pack_id for c in chunks})
    recording.calls.clear()
    assert repo.read_manifest(BACKUP_ID, cached=True) == expected
    assert recording.calls == [("get", Kind.MANIFESTS, BACKUP_ID)]  # the root always from storage
    victim = chunks[0]
    copy = tmp_path / repo.id / "chunks" / victim.chunk_id[:2] / victim.chunk_id
    damaged = bytearray(copy.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    copy.write_bytes(bytes(damaged))
    recording.calls.clear()
    assert repo.read_manifest(BACKUP_ID, cached=True) == expected
    assert reads(recording, Kind.PACKS) == [victim.pack_id]  # that chunk alone, from storage
    assert copy.read_bytes() != bytes(damaged)  # and its copy replaced
    os.rename(copy, copy.with_name(chunks[1].chunk_id))  # a valid blob under another chunk's name
    recording.calls.clear()
    assert repo.read_manifest(BACKUP_ID, cached=True) == expected


def test_the_cache_stays_under_its_bound_dropping_the_least_recently_used(tmp_path: Path) -> None:
    cache = MetadataCache(tmp_path, "r" * 32, max_bytes=10_000)
    for n in range(8):
        cache.put_chunk(f"{n:02d}" + "0" * 62, bytes(2_000))
        os.utime(cache._chunk_path(f"{n:02d}" + "0" * 62), (1_000_000 + n, 1_000_000 + n))
    cache.chunk("00" + "0" * 62)  # used just now
    cache.trim()
    kept = sorted(p.name[:2] for p in (tmp_path / ("r" * 32) / "chunks").rglob("*") if p.is_file())
    assert kept == ["00", "04", "05", "06", "07"]  # 5 x 2,000 bytes: at the bound
