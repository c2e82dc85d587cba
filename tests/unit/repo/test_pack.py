"""Packs (docs/FORMAT.md section 5): blobs, a sealed index, a trailer; read back from the tail alone."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

import pytest

from app.errors import IntegrityError, ObjectNotFoundError, RepositoryError
from app.repo import codecs
from app.repo.codecs import Codec
from app.repo.crypto import check_header
from app.repo.format import ENVELOPE_OVERHEAD, PACK_MAGIC, PACK_TRAILER, Kind, ObjectType
from app.repo.pack import PackBuilder, PackEntry, parse_index, parse_trailer
from app.repo.repository import Repository
from app.storage.memory import MemoryStorage
from tests.unit.repo.support import random_hex, text_bytes


@dataclass
class BuiltPack:
    pack_id: str
    data: bytes
    chunks: dict[str, bytes]
    blobs: dict[str, bytes]
    entries: list[PackEntry]


def build_pack(repo: Repository, rng: random.Random, count: int = 10) -> BuiltPack:
    """A pack of `count` seeded chunks, half random, half text, of assorted sizes; put to storage."""
    builder = PackBuilder()
    chunks, blobs = {}, {}
    for i in range(count):
        size = rng.choice([1, 100, 5000, 70_000, 140_000])
        data = rng.randbytes(size) if i % 2 else text_bytes(rng, size)
        chunk_id = repo.chunk_ids.of(data)
        blob = repo.seal_chunk(chunk_id, data, 3)
        builder.add(chunk_id, blob, len(data))
        chunks[chunk_id], blobs[chunk_id] = data, blob
    entries = list(builder.entries)
    pack_id = random_hex(rng, 32)
    pack = bytes(repo.finish_pack(pack_id, builder))
    repo.put_pack(pack_id, pack)
    return BuiltPack(pack_id, pack, chunks, blobs, entries)


@pytest.fixture
def built(repo: Repository, rng: random.Random) -> BuiltPack:
    return build_pack(repo, rng)


def test_index_round_trips_through_storage(repo: Repository, built: BuiltPack) -> None:
    entries = repo.read_pack_index(built.pack_id)
    assert entries == built.entries
    assert [e.chunk_id for e in entries] == list(built.chunks)
    assert repo.read_pack_index(built.pack_id, size=len(built.data)) == entries


def test_entries_slice_the_blobs_exactly_and_open_to_the_chunks(repo: Repository, built: BuiltPack) -> None:
    position = 0
    for entry in repo.read_pack_index(built.pack_id):
        assert entry.offset == position, "blobs are back to back from offset 0"
        blob = built.data[entry.offset : entry.offset + entry.length]
        assert blob == built.blobs[entry.chunk_id]
        assert repo.read_blob(built.pack_id, entry.offset, entry.length) == blob
        assert entry.raw_length == len(built.chunks[entry.chunk_id])
        assert (
            repo.open_chunk(entry.chunk_id, blob, raw_length=entry.raw_length) == built.chunks[entry.chunk_id]
        )
        assert repo.open_chunk(entry.chunk_id, blob) == built.chunks[entry.chunk_id]
        position += entry.length


def test_pack_layout_is_blobs_then_sealed_index_then_trailer(repo: Repository, built: BuiltPack) -> None:
    blobs_end = sum(e.length for e in built.entries)
    assert built.data[:blobs_end] == b"".join(built.blobs[e.chunk_id] for e in built.entries)
    assert built.data[-4:] == PACK_MAGIC == b"EQPK"
    (index_len,) = struct.unpack("<I", built.data[-PACK_TRAILER:-4])
    assert blobs_end + index_len + PACK_TRAILER == len(built.data)
    sealed_index = built.data[blobs_end : blobs_end + index_len]
    check_header(sealed_index, ObjectType.PACK_INDEX, built.pack_id)
    assert parse_trailer(built.data[-PACK_TRAILER:], built.pack_id) == index_len


def test_the_index_hides_the_chunk_ids(built: BuiltPack) -> None:
    for chunk_id in built.chunks:
        assert bytes.fromhex(chunk_id) not in built.data
        assert chunk_id.encode() not in built.data


def test_chunk_blobs_are_compressed_when_it_pays(repo: Repository, rng: random.Random) -> None:
    text, noise = text_bytes(rng, 200_000), rng.randbytes(200_000)
    for data, codec in ((text, Codec.ZSTD), (noise, Codec.RAW)):
        chunk_id = repo.chunk_ids.of(data)
        blob = repo.seal_chunk(chunk_id, data, 3)
        assert (len(blob) < len(data)) is (codec == Codec.ZSTD)
        assert repo.keyring.current.open(blob, ObjectType.CHUNK, chunk_id)[0] == codec
        assert repo.open_chunk(chunk_id, blob) == data


def test_chunks_sealed_into_a_reused_pack_buffer_open_as_sealed_ones(
    repo: Repository, rng: random.Random
) -> None:
    """`pack_chunk` seals straight into the pack (no blob object): raw and zstd chunks, small and
    bigger than a thread's first scratch buffer, open to their data; a second pack written into the
    first one's buffer (a writer reuses it) holds its own chunks, the first pack's stored copy intact."""
    kinds = [text_bytes(rng, 200_000), rng.randbytes(200_000), rng.randbytes(3 << 20), b"", b"x"]
    buffer = None
    stored: dict[str, tuple[str, bytes]] = {}
    for round_ in range(2):
        builder = PackBuilder(buffer)
        for data in kinds:
            data = data + bytes([round_])
            chunk_id = repo.chunk_ids.of(data)
            repo.pack_chunk(builder, chunk_id, codecs.compress(data, 3), len(data))
            stored[chunk_id] = ("", data)
        pack_id = random_hex(rng, 32)
        view = repo.finish_pack(pack_id, builder)
        repo.put_pack(pack_id, view)
        view.release()
        buffer = builder.buffer
        for entry in repo.read_pack_index(pack_id):
            stored[entry.chunk_id] = (pack_id, stored[entry.chunk_id][1])
    assert len(stored) == 2 * len(kinds)
    for chunk_id, (pack_id, data) in stored.items():
        entry = next(e for e in repo.read_pack_index(pack_id) if e.chunk_id == chunk_id)
        blob = repo.read_blob(pack_id, entry.offset, entry.length)
        assert repo.open_chunk(chunk_id, blob) == data
        assert entry.raw_length == len(data)


def test_an_empty_pack_has_an_empty_index(repo: Repository, rng: random.Random) -> None:
    pack_id = random_hex(rng, 32)
    repo.put_pack(pack_id, repo.finish_pack(pack_id, PackBuilder()))
    assert repo.read_pack_index(pack_id) == []


def test_builder_tracks_size_and_count(rng: random.Random) -> None:
    builder = PackBuilder()
    assert (builder.size, len(builder)) == (0, 0)
    builder.add("00" * 32, b"a" * 100, 7)
    builder.add("11" * 32, b"b" * 60, 3)
    assert (builder.size, len(builder)) == (160, 2)
    assert builder.entries[1] == PackEntry("11" * 32, 100, 60, 3)
    assert parse_index(builder.index_plaintext(), "p") == builder.entries


def test_pack_moved_to_another_name_fails_its_index(
    repo: Repository, built: BuiltPack, rng: random.Random
) -> None:
    other = random_hex(rng, 32)
    repo.put_pack(other, built.data)
    with pytest.raises(IntegrityError, match=f"index of pack {other} failed authentication"):
        repo.read_pack_index(other)


def test_a_blob_moved_to_another_chunk_fails(repo: Repository, built: BuiltPack) -> None:
    first, second = built.entries[0], built.entries[1]
    blob = built.data[first.offset : first.offset + first.length]
    with pytest.raises(IntegrityError, match=second.chunk_id):
        repo.open_chunk(second.chunk_id, blob)


def test_corrupt_trailer_magic_names_the_pack(
    repo: Repository, storage: MemoryStorage, built: BuiltPack
) -> None:
    for bad in (b"EQDR", b"\x00\x00\x00\x00", b"eqpk"):
        storage.put(Kind.PACKS, built.pack_id, built.data[:-4] + bad)
        with pytest.raises(IntegrityError, match=rf"pack {built.pack_id} has no pack trailer \(bad magic\)"):
            repo.read_pack_index(built.pack_id)


@pytest.mark.parametrize("cut", [1, 3, 4, 8, 9, ENVELOPE_OVERHEAD, 1000])
def test_a_pack_missing_its_tail_names_the_pack(
    repo: Repository, storage: MemoryStorage, built: BuiltPack, cut: int
) -> None:
    storage.put(Kind.PACKS, built.pack_id, built.data[:-cut])
    with pytest.raises(IntegrityError, match=f"pack {built.pack_id}"):
        repo.read_pack_index(built.pack_id)


@pytest.mark.parametrize("keep", [0, 1, 7])
def test_a_pack_shorter_than_its_trailer_is_truncated(
    repo: Repository, storage: MemoryStorage, built: BuiltPack, keep: int
) -> None:
    storage.put(Kind.PACKS, built.pack_id, built.data[:keep])
    with pytest.raises(IntegrityError, match=f"pack {built.pack_id} is truncated"):
        repo.read_pack_index(built.pack_id)


def test_a_stale_size_is_caught(repo: Repository, built: BuiltPack) -> None:
    """A size from a stale catalog row, smaller than the pack, lands the trailer read mid-pack."""
    with pytest.raises(IntegrityError, match=f"pack {built.pack_id}"):
        repo.read_pack_index(built.pack_id, size=len(built.data) - 10)


def test_an_index_length_beyond_the_pack_names_the_pack(
    repo: Repository, storage: MemoryStorage, built: BuiltPack
) -> None:
    damaged = built.data[:-PACK_TRAILER] + struct.pack("<I4s", len(built.data), PACK_MAGIC)
    storage.put(Kind.PACKS, built.pack_id, damaged)
    with pytest.raises(IntegrityError, match=f"pack {built.pack_id}: index length .* exceeds the pack"):
        repo.read_pack_index(built.pack_id)


def test_a_flipped_index_byte_names_the_pack(
    repo: Repository, storage: MemoryStorage, built: BuiltPack, rng: random.Random
) -> None:
    """Every byte of the sealed index but its key id (which selects the key: see the next test)."""
    start = sum(e.length for e in built.entries)
    key_id = range(start + 6, start + 22)
    positions = [*range(start, key_id.start), *range(key_id.stop, len(built.data) - PACK_TRAILER)]
    for position in [*positions[:30], *rng.sample(positions, 30), *positions[-20:]]:
        damaged = bytearray(built.data)
        damaged[position] ^= rng.randrange(1, 256)
        storage.put(Kind.PACKS, built.pack_id, bytes(damaged))
        with pytest.raises(IntegrityError, match=built.pack_id):
            repo.read_pack_index(built.pack_id)


def test_a_flipped_index_key_id_is_refused_naming_the_pack(
    repo: Repository, storage: MemoryStorage, built: BuiltPack
) -> None:
    start = sum(e.length for e in built.entries)
    for position in range(start + 6, start + 22):
        damaged = bytearray(built.data)
        damaged[position] ^= 0x01
        storage.put(Kind.PACKS, built.pack_id, bytes(damaged))
        # an unknown key id reads as a key this keyring lacks: refused, naming the pack
        with pytest.raises((IntegrityError, RepositoryError), match=built.pack_id):
            repo.read_pack_index(built.pack_id)


def test_a_flipped_blob_byte_fails_that_chunk_only(
    repo: Repository, built: BuiltPack, rng: random.Random
) -> None:
    target = built.entries[3]
    damaged = bytearray(built.data)
    damaged[target.offset + rng.randrange(target.length)] ^= 0x40
    for entry in built.entries:
        blob = bytes(damaged[entry.offset : entry.offset + entry.length])
        if entry is target:
            with pytest.raises(IntegrityError, match=entry.chunk_id):
                repo.open_chunk(entry.chunk_id, blob)
        else:
            assert repo.open_chunk(entry.chunk_id, blob) == built.chunks[entry.chunk_id]


@pytest.mark.parametrize("delta", [-1, +1, -40])
def test_a_corrupt_index_length_is_an_integrity_error(
    repo: Repository, storage: MemoryStorage, built: BuiltPack, delta: int
) -> None:
    (index_len,) = struct.unpack("<I", built.data[-PACK_TRAILER:-4])
    damaged = built.data[:-PACK_TRAILER] + struct.pack("<I4s", index_len + delta, PACK_MAGIC)
    storage.put(Kind.PACKS, built.pack_id, damaged)
    with pytest.raises(IntegrityError, match=f"pack {built.pack_id}"):
        repo.read_pack_index(built.pack_id)


def test_a_missing_pack_is_object_not_found(repo: Repository, rng: random.Random) -> None:
    pack_id = random_hex(rng, 32)
    with pytest.raises(ObjectNotFoundError, match=f"packs/{pack_id}"):
        repo.read_pack_index(pack_id)


def test_index_plaintext_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(IntegrityError, match="pack p: index length 47 is not a multiple of 48"):
        parse_index(b"\x00" * 47, "p")
