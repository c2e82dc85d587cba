"""Manifest version 2 from storage alone: entries as JSON lines in manifest chunks, read back through
the root's locations; damage names the backup and the pack (docs/FORMAT.md section 6)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from app.errors import IntegrityError, ObjectNotFoundError, RepositoryError
from app.repo import manifest
from app.repo.format import Kind, ObjectType
from app.repo.manifest import READ_GAP, READ_LIMIT, ManifestChunk, plan_reads
from app.repo.pack import PackBuilder
from app.repo.repository import Repository
from app.storage.memory import MemoryStorage
from tests.unit.repo.support import RecordingStorage, random_hex

BACKUP_ID = "20261127T040000Z-a1b2c3"
HEADER = {"id": BACKUP_ID, "source": "docs", "source_path": "/srv/secret-project", "state": "complete"}


def tree_entries(rng: random.Random, files: int) -> list[dict[str, Any]]:
    """Entries as a backup of `files` files in a few directories records them, sorted by path."""
    entries: list[dict[str, Any]] = [
        {
            "path": f"d{d:02d}",
            "type": "dir",
            "mode": 493,
            "uid": 0,
            "gid": 0,
            "mtime_ns": 1_700_000_000 * 10**9,
        }
        for d in range(10)
    ]
    for i in range(files):
        entries.append(
            {
                "path": f"d{i % 10:02d}/file-{i:05d}.txt",
                "type": "file",
                "mode": 420,
                "uid": 1000,
                "gid": 1000,
                "mtime_ns": rng.randrange(10**18),
                "size": rng.randrange(10**6),
                "ctime_ns": rng.randrange(10**18),
                "inode": rng.randrange(10**7),
                "chunks": [random_hex(rng, 32)],
            }
        )
    return sorted(entries, key=lambda e: e["path"])


def write_v2_manifest(
    repo: Repository, rng: random.Random, entries: list[dict[str, Any]], *, packs: int = 1
) -> list[ManifestChunk]:
    """What app/backup/manifests.py writes, without the catalog: every manifest chunk in `packs` packs
    (consecutive runs), then the root. Returns the chunks as the root lists them."""
    data = manifest.encode_entries(entries)
    pieces = list(manifest.manifest_chunker(repo.keyring.chunker_seed).cut(data))
    per_pack = -(-len(pieces) // packs) if pieces else 1
    chunks: list[ManifestChunk] = []
    for start in range(0, len(pieces), per_pack):
        pack_id, builder = random_hex(rng, 32), PackBuilder()
        for piece in pieces[start : start + per_pack]:
            chunk_id = repo.chunk_ids.of(piece)
            builder.add(chunk_id, repo.seal_chunk(chunk_id, piece, 3), len(piece))
        repo.put_pack(pack_id, repo.finish_pack(pack_id, builder))
        chunks += [
            ManifestChunk(e.chunk_id, pack_id, e.offset, e.length, e.raw_length) for e in builder.entries
        ]
    repo.write_manifest_root(BACKUP_ID, manifest.root(HEADER, len(data), len(entries), chunks))
    return chunks


def cut_ids(repo: Repository, entries: list[dict[str, Any]]) -> list[str]:
    data = manifest.encode_entries(entries)
    return [repo.chunk_ids.of(p) for p in manifest.manifest_chunker(repo.keyring.chunker_seed).cut(data)]


# Entries as JSON lines ---------------------------------------------------------------------------------------


def test_entries_are_one_compact_json_line_each_and_deterministic(rng: random.Random) -> None:
    entries = tree_entries(rng, 20)
    data = manifest.encode_entries(entries)
    assert data == manifest.encode_entries([dict(e) for e in entries])
    lines = data.split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(entries) + 1
    assert (
        lines[0] == b'{"path":"d00","type":"dir","mode":493,"uid":0,"gid":0,"mtime_ns":1700000000000000000}'
    )
    assert manifest.decode_entries(data, len(entries), BACKUP_ID) == entries


def test_odd_names_stay_on_their_line(rng: random.Random) -> None:
    odd = [
        {"path": "a\nb", "type": "file", "mode": 420, "chunks": []},  # a newline in a name is escaped
        {"path": "caf\u00e9", "type": "file", "mode": 420, "chunks": []},
        {"path": "raw-\udcff", "type": "file", "mode": 420, "chunks": []},  # not UTF-8 on disk
    ]
    data = manifest.encode_entries(odd)
    assert data.count(b"\n") == 3
    assert manifest.decode_entries(data, 3, BACKUP_ID) == odd


def test_decoding_checks_the_line_count() -> None:
    data = manifest.encode_entries([{"path": "a"}, {"path": "b"}])
    with pytest.raises(IntegrityError, match=f"manifest {BACKUP_ID}: 2 entries where its root says 3"):
        manifest.decode_entries(data, 3, BACKUP_ID)
    with pytest.raises(IntegrityError, match="do not end with a line end"):
        manifest.decode_entries(data[:-1], 2, BACKUP_ID)
    with pytest.raises(IntegrityError, match="entry 2 is not a JSON object"):
        manifest.decode_entries(b'{"path":"a"}\n[1]\n', 2, BACKUP_ID)


def test_one_changed_entry_changes_few_manifest_chunks(repo: Repository, rng: random.Random) -> None:
    entries = tree_entries(rng, 4000)
    before = cut_ids(repo, entries)
    assert cut_ids(repo, [dict(e) for e in entries]) == before, "an unchanged tree cuts alike"
    changed = [dict(e) for e in entries]
    changed[2000].update(size=1, mtime_ns=changed[2000]["mtime_ns"] + 1, chunks=[random_hex(rng, 32)])
    after = cut_ids(repo, changed)
    assert len(before) >= 20
    assert len(set(after) - set(before)) <= 2


# Reading a version 2 manifest --------------------------------------------------------------------------------


@pytest.mark.parametrize("packs", [1, 3])
def test_round_trip_through_manifest_chunks(repo: Repository, rng: random.Random, packs: int) -> None:
    entries = tree_entries(rng, 3000)
    chunks = write_v2_manifest(repo, rng, entries, packs=packs)
    assert len(chunks) > 5
    assert len({c.pack_id for c in chunks}) == packs
    assert repo.read_manifest(BACKUP_ID) == {"version": 2, "backup": HEADER, "entries": entries}
    assert repo.read_manifest_header(BACKUP_ID) == HEADER


def test_a_manifest_without_entries_has_no_chunk(repo: Repository, rng: random.Random) -> None:
    assert write_v2_manifest(repo, rng, []) == []
    assert repo.read_manifest(BACKUP_ID)["entries"] == []


def test_the_root_and_its_chunks_are_sealed(
    repo: Repository, storage: MemoryStorage, rng: random.Random
) -> None:
    write_v2_manifest(repo, rng, tree_entries(rng, 50))
    for kind in (Kind.MANIFESTS, Kind.PACKS):
        for info in storage.list(kind):
            stored = storage.get(kind, info.name)
            assert b"secret-project" not in stored and b"file-00001" not in stored


def test_one_pack_is_read_in_one_ranged_read(
    repo: Repository, storage: MemoryStorage, rng: random.Random
) -> None:
    chunks = write_v2_manifest(repo, rng, tree_entries(rng, 3000))
    recording = RecordingStorage(storage)
    repo.storage = recording
    repo.read_manifest(BACKUP_ID)
    assert recording.calls == [("get", Kind.MANIFESTS, BACKUP_ID), ("get", Kind.PACKS, chunks[0].pack_id)]


def test_the_header_alone_reads_only_the_root(
    repo: Repository, storage: MemoryStorage, rng: random.Random
) -> None:
    write_v2_manifest(repo, rng, tree_entries(rng, 3000))
    recording = RecordingStorage(storage)
    repo.storage = recording
    assert repo.read_manifest_header(BACKUP_ID)["id"] == BACKUP_ID
    assert recording.calls == [("get", Kind.MANIFESTS, BACKUP_ID)]


def test_a_damaged_manifest_chunk_names_the_backup_and_the_pack(
    repo: Repository, storage: MemoryStorage, rng: random.Random
) -> None:
    chunks = write_v2_manifest(repo, rng, tree_entries(rng, 3000))
    victim = chunks[len(chunks) // 2]
    pack = bytearray(storage.get(Kind.PACKS, victim.pack_id))
    pack[victim.offset + victim.length // 2] ^= 0x01
    storage.put(Kind.PACKS, victim.pack_id, bytes(pack))
    with pytest.raises(IntegrityError, match=f"backup {BACKUP_ID}.*pack {victim.pack_id}") as caught:
        repo.read_manifest(BACKUP_ID)
    assert caught.value.detail is not None and victim.chunk_id in caught.value.detail
    assert caught.value.hint is not None and f"packs/{victim.pack_id}" in caught.value.hint
    assert repo.read_manifest_header(BACKUP_ID) == HEADER, "the header needs no manifest chunk"


def test_a_missing_manifest_pack_is_named(
    repo: Repository, storage: MemoryStorage, rng: random.Random
) -> None:
    chunks = write_v2_manifest(repo, rng, tree_entries(rng, 3000), packs=2)
    gone = chunks[-1].pack_id
    storage.delete(Kind.PACKS, gone)
    with pytest.raises(ObjectNotFoundError, match=f"packs/{gone} is missing") as caught:
        repo.read_manifest(BACKUP_ID)
    assert f"backup {BACKUP_ID}" in str(caught.value.detail) and BACKUP_ID in str(caught.value.hint)


def test_a_root_that_disagrees_with_its_chunks_fails(repo: Repository, rng: random.Random) -> None:
    entries = tree_entries(rng, 300)
    chunks = write_v2_manifest(repo, rng, entries)
    data = manifest.encode_entries(entries)
    for count, size, listed, message in [
        (len(entries) + 1, len(data), chunks, "entries where its root says"),
        (len(entries), len(data) + 1, chunks, "bytes, its root says"),
        (len(entries), len(data), chunks[1:], "bytes, its root says"),
    ]:
        root = manifest.root(HEADER, len(data), count, listed)
        root["entries"]["bytes"] = size
        repo.write_manifest_root(BACKUP_ID, root)
        with pytest.raises(IntegrityError, match=message):
            repo.read_manifest(BACKUP_ID)


def test_a_chunk_listed_under_another_id_fails(repo: Repository, rng: random.Random) -> None:
    entries = tree_entries(rng, 300)
    chunks = write_v2_manifest(repo, rng, entries)
    first = chunks[0]
    forged = [ManifestChunk(chunks[1].chunk_id, first.pack_id, first.offset, first.length, first.raw_length)]
    data = manifest.encode_entries(entries)
    repo.write_manifest_root(BACKUP_ID, manifest.root(HEADER, len(data), len(entries), forged + chunks[1:]))
    with pytest.raises(IntegrityError, match=f"pack {first.pack_id}"):
        repo.read_manifest(BACKUP_ID)


@pytest.mark.parametrize("change", [{"version": 3}, {"version": None}])
def test_an_unknown_manifest_version_is_refused(repo: Repository, change: dict[str, Any]) -> None:
    repo.write_json(
        Kind.MANIFESTS, BACKUP_ID, ObjectType.MANIFEST, {"backup": HEADER, "entries": [], **change}
    )
    for read in (repo.read_manifest, repo.read_manifest_header):
        with pytest.raises(RepositoryError, match=f"manifest {BACKUP_ID} has version") as caught:
            read(BACKUP_ID)
        assert caught.value.hint is not None and "upgrade" in caught.value.hint


def test_an_unknown_entries_format_is_refused(repo: Repository) -> None:
    root = manifest.root(HEADER, 0, 0, [])
    root["entries"]["format"] = "parquet"
    repo.write_manifest_root(BACKUP_ID, root)
    with pytest.raises(RepositoryError, match="entries format 'parquet' is unknown"):
        repo.read_manifest(BACKUP_ID)


def test_only_a_version_2_root_is_written(repo: Repository) -> None:
    with pytest.raises(ValueError, match="version 2"):
        repo.write_manifest_root(BACKUP_ID, {"version": 1, "backup": HEADER, "entries": []})


def test_a_version_1_manifest_still_reads(repo: Repository, rng: random.Random) -> None:
    doc = {"version": 1, "backup": HEADER, "entries": tree_entries(rng, 30)}
    repo.write_json(Kind.MANIFESTS, BACKUP_ID, ObjectType.MANIFEST, doc)
    assert repo.read_manifest(BACKUP_ID) == doc
    assert repo.read_manifest_header(BACKUP_ID) == HEADER


# Planning ranged reads ---------------------------------------------------------------------------------------


def chunk_at(pack: str, offset: int, length: int) -> ManifestChunk:
    return ManifestChunk(f"{offset:064x}", pack, offset, length, length)


def test_neighbouring_blobs_of_a_pack_are_one_read() -> None:
    a, b = "a" * 64, "b" * 64
    chunks = [
        chunk_at(a, 100, 50),
        chunk_at(b, 0, 10),
        chunk_at(a, 0, 100),
        chunk_at(a, 150 + READ_GAP - 1, 5),
    ]
    reads = plan_reads(chunks)
    assert [(r.pack_id, r.offset, r.length) for r in reads] == [(a, 0, 150 + READ_GAP + 4), (b, 0, 10)]
    assert [position for position, _ in reads[0].chunks] == [2, 0, 3], "in offset order, positions kept"


def test_a_gap_of_a_mib_or_a_read_past_the_limit_splits() -> None:
    a = "a" * 64
    gap = plan_reads([chunk_at(a, 0, 10), chunk_at(a, 10 + READ_GAP, 10)])
    assert [(r.offset, r.length) for r in gap] == [(0, 10), (10 + READ_GAP, 10)]
    big = READ_LIMIT // 4
    reads = plan_reads([chunk_at(a, i * big, big) for i in range(6)])
    assert [(r.offset, r.length) for r in reads] == [(0, READ_LIMIT), (READ_LIMIT, 2 * big)]
