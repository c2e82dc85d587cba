"""Creating, opening and re-keying a repository; manifests; chunks checked against their ids."""

from __future__ import annotations

import json
import random
import re

import pytest

from app.errors import (
    IntegrityError,
    ObjectNotFoundError,
    RepositoryError,
    StorageError,
    WrongKeyError,
)
from app.repo import codecs
from app.repo.chunker import Chunker, ChunkerParams
from app.repo.crypto import check_header, envelope_key_id
from app.repo.format import FORMAT_VERSION, Kind, ObjectType
from app.repo.keys import MasterKey
from app.repo.repository import KEYRING_NEXT, Repository
from app.storage.faulty import FaultyStorage
from app.storage.memory import MemoryStorage
from tests.unit.repo.support import SMALL_CHUNKS, RecordingStorage, random_hex, snapshot, text_bytes

BACKUP_ID = "20261127T040000Z-a1b2c3"


def other_master(rng: random.Random) -> MasterKey:
    return MasterKey.from_hex(random_hex(rng, 32), origin="test")


def sealed_chunk(repo: Repository, data: bytes) -> tuple[str, bytes]:
    chunk_id = repo.chunk_ids.of(data)
    return chunk_id, repo.seal_chunk(chunk_id, data, 3)


def write_v1_manifest(repo: Repository, backup_id: str, doc: dict[str, object]) -> int:
    """A manifest as written before version 2 (docs/FORMAT.md section 6): entries inline in one object."""
    return repo.write_json(Kind.MANIFESTS, backup_id, ObjectType.MANIFEST, doc)


def manifest_doc(rng: random.Random, backup_id: str = BACKUP_ID) -> dict[str, object]:
    return {
        "version": 1,
        "backup": {
            "id": backup_id,
            "source": "docs",
            "source_path": "/srv/secret-project",
            "state": "complete",
        },
        "entries": [
            {
                "path": f"dir/file-{i}.txt",
                "type": "file",
                "size": rng.randrange(10**6),
                "chunks": [random_hex(rng, 32)],
            }
            for i in range(50)
        ],
    }


# init and open -----------------------------------------------------------------------------------------


def test_init_writes_keyring_and_config_only(storage: MemoryStorage, master: MasterKey) -> None:
    repo = Repository.init(storage, master)
    assert set(snapshot(storage)) == {(Kind.KEYS, "keyring"), (Kind.CONFIG, "config")}
    assert re.fullmatch(r"[0-9a-f]{32}", repo.id)
    assert repo.config["repository_id"] == repo.id == repo.keyring.repository_id
    assert repo.config["version"] == FORMAT_VERSION
    assert repo.chunker_params == ChunkerParams()
    sealed = storage.get(Kind.CONFIG, "config")
    check_header(sealed, ObjectType.CONFIG, "config")
    assert envelope_key_id(sealed) == repo.keyring.current_key_id


def test_init_then_open_gives_the_same_repository(storage: MemoryStorage, master: MasterKey) -> None:
    created = Repository.init(storage, master, chunker=SMALL_CHUNKS, pack_target_size=1 << 20)
    opened = Repository.open(storage, master)
    assert opened.id == created.id
    assert opened.config == created.config
    assert opened.chunker_params == SMALL_CHUNKS
    assert opened.pack_target_size == 1 << 20
    assert opened.keyring.id_key == created.keyring.id_key
    assert opened.keyring.chunker_seed == created.keyring.chunker_seed
    assert opened.keyring.current_key_id == created.keyring.current_key_id


def test_writers_of_one_repository_chunk_and_name_alike(
    storage: MemoryStorage, master: MasterKey, rng: random.Random
) -> None:
    created = Repository.init(storage, master, chunker=SMALL_CHUNKS)
    opened = Repository.open(storage, master)
    data = rng.randbytes(1 << 20)
    cuts = [opened.chunk_ids.of(p) for p in opened.new_chunker().cut(data)]
    assert cuts == [created.chunk_ids.of(p) for p in created.new_chunker().cut(data)]
    expected = Chunker(SMALL_CHUNKS, created.keyring.chunker_seed)
    assert cuts == [created.chunk_ids.of(p) for p in expected.cut(data)]


def test_two_repositories_have_different_ids_and_keys(master: MasterKey) -> None:
    a, b = Repository.init(MemoryStorage(), master), Repository.init(MemoryStorage(), master)
    assert a.id != b.id
    assert a.keyring.id_key != b.keyring.id_key
    assert a.chunk_ids.of(b"same") != b.chunk_ids.of(b"same")


def test_init_twice_refuses(storage: MemoryStorage, master: MasterKey, rng: random.Random) -> None:
    Repository.init(storage, master)
    before = snapshot(storage)
    for key in (master, other_master(rng)):
        with pytest.raises(RepositoryError, match="already holds a repository"):
            Repository.init(storage, key)
    assert snapshot(storage) == before


@pytest.mark.parametrize("present", [(Kind.KEYS, "keyring"), (Kind.CONFIG, "config")])
def test_init_refuses_over_a_partial_repository(
    storage: MemoryStorage, master: MasterKey, present: tuple[str, str]
) -> None:
    storage.put(*present, b"anything")
    with pytest.raises(RepositoryError, match="already holds a repository"):
        Repository.init(storage, master)
    assert snapshot(storage) == {present: b"anything"}


def test_open_on_empty_storage_says_there_is_no_repository(storage: MemoryStorage, master: MasterKey) -> None:
    with pytest.raises(RepositoryError, match="no repository at memory://") as caught:
        Repository.open(storage, master)
    assert caught.value.hint is not None and "`equisplit-dr init`" in caught.value.hint
    assert snapshot(storage) == {}


def test_open_with_a_wrong_master_key_reads_nothing_else_and_writes_nothing(
    storage: MemoryStorage, master: MasterKey, rng: random.Random
) -> None:
    repo = Repository.init(storage, master)
    write_v1_manifest(repo, BACKUP_ID, manifest_doc(rng))
    before = snapshot(storage)
    recording = RecordingStorage(storage)
    with pytest.raises(WrongKeyError, match="wrong master key") as caught:
        Repository.open(recording, other_master(rng))
    # keys/keyring.next, looked for to name an unfinished rotation's new key, is the only other read
    assert recording.calls == [("get", Kind.KEYS, "keyring"), ("get", Kind.KEYS, KEYRING_NEXT)]
    assert snapshot(storage) == before
    assert caught.value.exit_code == 3


def test_open_refuses_a_newer_format_version(storage: MemoryStorage, master: MasterKey) -> None:
    repo = Repository.init(storage, master)
    config = dict(repo.config, version=FORMAT_VERSION + 1)
    payload = codecs.encode(json.dumps(config).encode(), None)
    storage.put(Kind.CONFIG, "config", repo.keyring.current.seal(ObjectType.CONFIG, "config", payload))
    with pytest.raises(RepositoryError, match=f"format version {FORMAT_VERSION + 1} is not supported"):
        Repository.open(storage, master)


def test_open_detects_a_config_from_another_repository(master: MasterKey) -> None:
    a, b = MemoryStorage(), MemoryStorage()
    Repository.init(a, master)
    Repository.init(b, master)
    a.put(Kind.CONFIG, "config", b.get(Kind.CONFIG, "config"))
    with pytest.raises(RepositoryError, match="config is sealed with data key"):
        Repository.open(a, master)


def test_open_detects_a_tampered_config(storage: MemoryStorage, master: MasterKey) -> None:
    Repository.init(storage, master)
    sealed = bytearray(storage.get(Kind.CONFIG, "config"))
    sealed[-1] ^= 0x01
    storage.put(Kind.CONFIG, "config", bytes(sealed))
    with pytest.raises(IntegrityError, match="config config failed authentication"):
        Repository.open(storage, master)


# Rotation -------------------------------------------------------------------------------------------------


def test_rotation_switches_the_master_key_and_keeps_old_chunks_readable(
    storage: MemoryStorage, master: MasterKey, rng: random.Random
) -> None:
    repo = Repository.init(storage, master, chunker=SMALL_CHUNKS)
    old_key_id = repo.keyring.current_key_id
    old_data = text_bytes(rng, 50_000)
    old_id, old_blob = sealed_chunk(repo, old_data)
    write_v1_manifest(repo, BACKUP_ID, manifest_doc(rng))
    keyring_before = storage.get(Kind.KEYS, "keyring")
    new_master = other_master(rng)

    repo.rotate_master_key(new_master, new_data_key=True)

    assert storage.get(Kind.KEYS, "keyring") != keyring_before
    with pytest.raises(WrongKeyError):
        Repository.open(storage, master)
    reopened = Repository.open(storage, new_master)
    assert reopened.id == repo.id and reopened.config == repo.config
    assert reopened.keyring.id_key == repo.keyring.id_key, "the id key is never rotated"
    assert reopened.open_chunk(old_id, old_blob) == old_data
    assert set(reopened.keyring.data_keys) == {old_key_id, repo.keyring.current_key_id}

    new_key_id = reopened.keyring.current_key_id
    assert new_key_id != old_key_id and new_key_id == repo.keyring.current_key_id
    new_data = rng.randbytes(3000)
    for writer in (repo, reopened):
        new_id, new_blob = sealed_chunk(writer, new_data)
        assert envelope_key_id(new_blob) == new_key_id
        assert reopened.open_chunk(new_id, new_blob) == new_data
    assert envelope_key_id(storage.get(Kind.CONFIG, "config")) == old_key_id, "the config is never rewritten"


def test_rotation_keeps_old_manifests_readable(
    storage: MemoryStorage, master: MasterKey, rng: random.Random
) -> None:
    repo = Repository.init(storage, master)
    doc = manifest_doc(rng)
    write_v1_manifest(repo, BACKUP_ID, doc)
    new_master = other_master(rng)
    repo.rotate_master_key(new_master, new_data_key=True)
    assert Repository.open(storage, new_master).read_manifest(BACKUP_ID) == doc


def test_rotation_without_a_new_data_key_keeps_the_current_key(
    storage: MemoryStorage, master: MasterKey, rng: random.Random
) -> None:
    repo = Repository.init(storage, master)
    key_id = repo.keyring.current_key_id
    data = rng.randbytes(1000)
    chunk_id, blob = sealed_chunk(repo, data)
    new_master = other_master(rng)
    repo.rotate_master_key(new_master)
    reopened = Repository.open(storage, new_master)
    assert reopened.keyring.current_key_id == key_id
    assert list(reopened.keyring.data_keys) == [key_id]
    assert reopened.open_chunk(chunk_id, blob) == data
    with pytest.raises(WrongKeyError):
        Repository.open(storage, master)


def test_rotation_leaves_no_keyring_next_behind(
    storage: MemoryStorage, master: MasterKey, rng: random.Random
) -> None:
    repo = Repository.init(storage, master)
    recording = RecordingStorage(storage)
    repo.storage = recording
    repo.rotate_master_key(other_master(rng), new_data_key=True)
    assert storage.stat(Kind.KEYS, KEYRING_NEXT) is None
    assert [info.name for info in storage.list(Kind.KEYS)] == ["keyring"]
    writes = [call for call in recording.calls if call[0] in ("put", "delete")]
    assert writes == [
        ("put", Kind.KEYS, KEYRING_NEXT),
        ("put", Kind.KEYS, "keyring"),
        ("delete", Kind.KEYS, KEYRING_NEXT),
    ], "keyring.next is written and verified before keys/keyring is replaced"
    assert recording.calls.index(("get", Kind.KEYS, KEYRING_NEXT)) < recording.calls.index(
        ("put", Kind.KEYS, "keyring")
    )


def test_rotation_can_be_repeated(storage: MemoryStorage, master: MasterKey, rng: random.Random) -> None:
    repo = Repository.init(storage, master)
    data = rng.randbytes(500)
    chunk_id, blob = sealed_chunk(repo, data)
    keys = [master]
    for _ in range(3):
        keys.append(other_master(rng))
        repo.rotate_master_key(keys[-1], new_data_key=True)
    for stale in keys[:-1]:
        with pytest.raises(WrongKeyError):
            Repository.open(storage, stale)
    reopened = Repository.open(storage, keys[-1])
    assert len(reopened.keyring.data_keys) == 4
    assert reopened.open_chunk(chunk_id, blob) == data


def test_a_failed_rotation_leaves_the_old_key_working(
    storage: MemoryStorage, master: MasterKey, rng: random.Random
) -> None:
    Repository.init(storage, master)
    before = snapshot(storage)
    repo = Repository.open(FaultyStorage(storage, {"put": 1}), master)
    with pytest.raises(StorageError, match="injected fault"):
        repo.rotate_master_key(other_master(rng), new_data_key=True)
    assert snapshot(storage) == before
    Repository.open(storage, master)


def test_after_a_failed_rotation_new_chunks_stay_readable(
    storage: MemoryStorage, master: MasterKey, rng: random.Random
) -> None:
    Repository.init(storage, master)
    repo = Repository.open(FaultyStorage(storage, {"put": 1}), master)
    key_id = repo.keyring.current_key_id
    with pytest.raises(StorageError):
        repo.rotate_master_key(other_master(rng), new_data_key=True)
    data = rng.randbytes(2000)
    chunk_id, blob = sealed_chunk(repo, data)
    assert Repository.open(storage, master).open_chunk(chunk_id, blob) == data
    assert repo.keyring.current_key_id == key_id


# Manifests -------------------------------------------------------------------------------------------------


def test_manifest_round_trip(repo: Repository, storage: MemoryStorage, rng: random.Random) -> None:
    doc = manifest_doc(rng)
    size = write_v1_manifest(repo, BACKUP_ID, doc)
    stored = storage.get(Kind.MANIFESTS, BACKUP_ID)
    assert size == len(stored)
    assert repo.read_manifest(BACKUP_ID) == doc
    check_header(stored, ObjectType.MANIFEST, BACKUP_ID)
    assert b"secret-project" not in stored and b"file-1.txt" not in stored
    plain = repo.keyring.current.open(stored, ObjectType.MANIFEST, BACKUP_ID)
    assert plain[0] == codecs.Codec.ZSTD, "manifests are zstd (docs/FORMAT.md section 6)"
    assert repo.list_manifests() == [BACKUP_ID]


def test_manifests_list_in_id_order(repo: Repository, rng: random.Random) -> None:
    ids = ["20261127T040000Z-a1b2c3", "20261126T020000Z-0f9e8d", "20261128T000000Z-000001"]
    for backup_id in ids:
        write_v1_manifest(repo, backup_id, manifest_doc(rng, backup_id))
    assert repo.list_manifests() == sorted(ids)
    for backup_id in ids:
        assert repo.read_manifest(backup_id)["backup"]["id"] == backup_id


def test_a_manifest_moved_to_another_backup_id_fails(
    repo: Repository, storage: MemoryStorage, rng: random.Random
) -> None:
    write_v1_manifest(repo, BACKUP_ID, manifest_doc(rng))
    other = "20261201T000000Z-ffffff"
    storage.put(Kind.MANIFESTS, other, storage.get(Kind.MANIFESTS, BACKUP_ID))
    with pytest.raises(IntegrityError, match=f"manifest {other} failed authentication"):
        repo.read_manifest(other)


def test_a_tampered_manifest_fails(repo: Repository, storage: MemoryStorage, rng: random.Random) -> None:
    write_v1_manifest(repo, BACKUP_ID, manifest_doc(rng))
    sealed = storage.get(Kind.MANIFESTS, BACKUP_ID)
    for position in (0, 4, 5, 30, len(sealed) // 2, len(sealed) - 1):
        damaged = bytearray(sealed)
        damaged[position] ^= 0x10
        storage.put(Kind.MANIFESTS, BACKUP_ID, bytes(damaged))
        with pytest.raises(IntegrityError, match=BACKUP_ID):
            repo.read_manifest(BACKUP_ID)


def test_a_missing_manifest_says_why(repo: Repository) -> None:
    with pytest.raises(ObjectNotFoundError, match=f"manifests/{BACKUP_ID}") as caught:
        repo.read_manifest(BACKUP_ID)
    assert caught.value.hint is not None and "never completed" in caught.value.hint


def test_another_repository_cannot_read_a_manifest(
    repo: Repository, storage: MemoryStorage, rng: random.Random
) -> None:
    write_v1_manifest(repo, BACKUP_ID, manifest_doc(rng))
    other = Repository.init(MemoryStorage(), other_master(rng))
    other.storage.put(Kind.MANIFESTS, BACKUP_ID, storage.get(Kind.MANIFESTS, BACKUP_ID))
    with pytest.raises(RepositoryError, match=f"manifest {BACKUP_ID} is sealed with data key"):
        other.read_manifest(BACKUP_ID)


# Chunks ----------------------------------------------------------------------------------------------------


def test_chunk_round_trip(repo: Repository, rng: random.Random) -> None:
    for data in (b"x", rng.randbytes(100_000), text_bytes(rng, 100_000)):
        chunk_id, blob = sealed_chunk(repo, data)
        assert chunk_id == repo.chunk_ids.of(data)
        assert repo.open_chunk(chunk_id, blob) == data
        assert repo.open_chunk(chunk_id, blob, raw_length=len(data)) == data


def test_open_chunk_detects_data_that_does_not_hash_to_its_id(repo: Repository, rng: random.Random) -> None:
    a, b = rng.randbytes(5000), rng.randbytes(5000)
    id_b = repo.chunk_ids.of(b)
    forged = repo.seal_chunk(id_b, a, 3)  # a writer's bug: data A sealed under the id of B
    with pytest.raises(IntegrityError, match=f"chunk {id_b} does not hash to its id"):
        repo.open_chunk(id_b, forged)


def test_open_chunk_under_another_id_fails(repo: Repository, rng: random.Random) -> None:
    _, blob = sealed_chunk(repo, rng.randbytes(5000))
    other = repo.chunk_ids.of(b"other")
    with pytest.raises(IntegrityError, match=f"chunk {other} failed authentication"):
        repo.open_chunk(other, blob)


def test_a_chunk_from_another_repository_is_refused(repo: Repository, rng: random.Random) -> None:
    other = Repository.init(MemoryStorage(), other_master(rng))
    chunk_id, blob = sealed_chunk(other, rng.randbytes(100))
    with pytest.raises(RepositoryError, match=f"chunk {chunk_id} is sealed with data key"):
        repo.open_chunk(chunk_id, blob)


def test_a_keyring_that_lost_a_data_key_names_the_key(
    storage: MemoryStorage, master: MasterKey, rng: random.Random
) -> None:
    """An old keyring copy put back after a rotation: chunks under the newer key are refused by name."""
    repo = Repository.init(storage, master)
    old_keyring = storage.get(Kind.KEYS, "keyring")
    repo.rotate_master_key(master, new_data_key=True)
    chunk_id, blob = sealed_chunk(repo, rng.randbytes(100))
    storage.put(Kind.KEYS, "keyring", old_keyring)
    stale = Repository.open(storage, master)
    with pytest.raises(RepositoryError, match=repo.keyring.current_key_id.hex()) as caught:
        stale.open_chunk(chunk_id, blob)
    assert caught.value.hint is not None and "restore keys/keyring" in caught.value.hint


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
@pytest.mark.parametrize("kind", ["chunk", "manifest", "config"])
def test_a_damaged_object_is_an_integrity_error_naming_it(
    storage: MemoryStorage, master: MasterKey, rng: random.Random, kind: str, damage: str
) -> None:
    repo = Repository.init(storage, master)
    chunk_id, blob = sealed_chunk(repo, rng.randbytes(1000))
    write_v1_manifest(repo, BACKUP_ID, manifest_doc(rng))
    original = {
        "chunk": blob,
        "manifest": storage.get(Kind.MANIFESTS, BACKUP_ID),
        "config": storage.get(Kind.CONFIG, "config"),
    }[kind]
    damaged = {"empty": b"", "truncated": original[:12], "garbage": rng.randbytes(len(original))}[damage]
    name = {"chunk": chunk_id, "manifest": BACKUP_ID, "config": "config"}[kind]
    with pytest.raises(IntegrityError, match=f"{kind} {name}"):
        if kind == "chunk":
            repo.open_chunk(chunk_id, damaged)
        elif kind == "manifest":
            storage.put(Kind.MANIFESTS, BACKUP_ID, damaged)
            repo.read_manifest(BACKUP_ID)
        else:
            storage.put(Kind.CONFIG, "config", damaged)
            Repository.open(storage, master)
