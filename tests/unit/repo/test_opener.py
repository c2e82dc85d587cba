"""ChunkOpener (app/repo/opener.py): the same plaintext as Repository.open_chunk, and every check and
error of it, for the blobs a restore opens in a row."""

from __future__ import annotations

import random

import pytest

from app.errors import IntegrityError, RepositoryError
from app.repo import codecs
from app.repo.format import ENVELOPE_HEADER, ObjectType
from app.repo.keys import MasterKey
from app.repo.opener import ChunkOpener
from app.repo.repository import Repository
from app.storage.memory import MemoryStorage
from tests.unit.repo.support import random_hex, text_bytes


def sealed(repo: Repository, data: bytes, level: int | None = 3) -> tuple[str, memoryview]:
    chunk_id = repo.chunk_ids.of(data)
    return chunk_id, memoryview(repo.seal_chunk(chunk_id, data, level))


def test_opens_what_open_chunk_opens(repo: Repository, rng: random.Random) -> None:
    opener = ChunkOpener(repo)
    for data, level in [
        (b"x", 3),
        (text_bytes(rng, 32 * 1024), 3),  # zstd
        (rng.randbytes(32 * 1024), 3),  # stored raw: compression does not pay
        (text_bytes(rng, 5000), None),  # raw by choice
        (bytes(32 * 1024), 3),  # a zero block group
    ]:
        chunk_id, blob = sealed(repo, data, level)
        assert bytes(opener.open(chunk_id, blob, len(data))) == data == repo.open_chunk(chunk_id, blob)


def test_a_blob_inside_a_larger_read(repo: Repository, rng: random.Random) -> None:
    """Blobs are views of one ranged read of the pack, as a restore slices them."""
    pieces = [text_bytes(rng, 32 * 1024), rng.randbytes(20_000), text_bytes(rng, 1000)]
    sealed_blobs = [(repo.chunk_ids.of(p), repo.seal_chunk(repo.chunk_ids.of(p), p, 3)) for p in pieces]
    read = memoryview(b"".join(blob for _, blob in sealed_blobs))
    opener, offset = ChunkOpener(repo), 0
    for (chunk_id, blob), data in zip(sealed_blobs, pieces, strict=True):
        assert bytes(opener.open(chunk_id, read[offset : offset + len(blob)], len(data))) == data
        offset += len(blob)


def test_data_that_does_not_hash_to_its_id(repo: Repository, rng: random.Random) -> None:
    a, b = text_bytes(rng, 5000), rng.randbytes(5000)
    id_b = repo.chunk_ids.of(b)
    forged = memoryview(repo.seal_chunk(id_b, a, 3))  # a writer's bug: data A sealed under the id of B
    with pytest.raises(IntegrityError, match=f"chunk {id_b} does not hash to its id"):
        ChunkOpener(repo).open(id_b, forged, len(a))


def test_a_blob_under_another_id_fails_authentication(repo: Repository, rng: random.Random) -> None:
    _, blob = sealed(repo, rng.randbytes(5000))
    other = repo.chunk_ids.of(b"other")
    with pytest.raises(IntegrityError, match=f"chunk {other} failed authentication"):
        ChunkOpener(repo).open(other, blob, 5000)


@pytest.mark.parametrize("where", ["header", "nonce", "codec", "body", "tag"])
def test_a_flipped_byte_fails_naming_the_chunk(repo: Repository, rng: random.Random, where: str) -> None:
    data = text_bytes(rng, 32 * 1024)
    chunk_id, blob = sealed(repo, data)
    damaged = bytearray(blob)
    at = {"header": 5, "nonce": ENVELOPE_HEADER - 1, "codec": ENVELOPE_HEADER, "body": len(blob) // 2,
          "tag": len(blob) - 1}[where]
    damaged[at] ^= 0x01
    with pytest.raises(IntegrityError, match=f"chunk {chunk_id}"):
        ChunkOpener(repo).open(chunk_id, memoryview(bytes(damaged)), len(data))


@pytest.mark.parametrize("length", [0, 12, 40, 50])
def test_a_truncated_blob_fails_naming_the_chunk(repo: Repository, rng: random.Random, length: int) -> None:
    chunk_id, blob = sealed(repo, text_bytes(rng, 1000))
    with pytest.raises(IntegrityError, match=f"chunk {chunk_id}"):
        ChunkOpener(repo).open(chunk_id, blob[:length], 1000)


def test_a_corrupt_zstd_frame_under_a_valid_tag_names_the_chunk(repo: Repository, rng: random.Random) -> None:
    """A writer's bug (the tag is good, the frame is not): the zstd error names the chunk."""
    data = text_bytes(rng, 32 * 1024)
    chunk_id = repo.chunk_ids.of(data)
    codec, body = codecs.compress(data, 3)
    assert codec == codecs.Codec.ZSTD
    broken = bytes([codec]) + bytes(body)[:8] + bytes(len(body) - 8)
    blob = memoryview(repo.keyring.current.seal(ObjectType.CHUNK, chunk_id, broken))
    with pytest.raises(IntegrityError, match=f"chunk {chunk_id}: zstd frame is corrupt"):
        ChunkOpener(repo).open(chunk_id, blob, len(data))


def test_an_unknown_codec_names_the_chunk(repo: Repository, rng: random.Random) -> None:
    data = text_bytes(rng, 1000)
    chunk_id = repo.chunk_ids.of(data)
    blob = memoryview(repo.keyring.current.seal(ObjectType.CHUNK, chunk_id, b"\x07" + data))
    with pytest.raises(IntegrityError, match=f"chunk {chunk_id}: unknown codec id 7"):
        ChunkOpener(repo).open(chunk_id, blob, len(data))


def test_a_chunk_from_another_repository_is_refused(repo: Repository, rng: random.Random) -> None:
    other = Repository.init(MemoryStorage(), MasterKey.from_hex(random_hex(rng, 32), origin="test"))
    chunk_id, blob = sealed(other, rng.randbytes(100))
    with pytest.raises(RepositoryError, match=f"chunk {chunk_id} is sealed with data key"):
        ChunkOpener(repo).open(chunk_id, blob, 100)


def test_a_data_key_added_since_the_opener_was_made(
    storage: MemoryStorage, master: MasterKey, rng: random.Random
) -> None:
    """Another process rotated to a new data key: the chunk opens through the repository's key refresh,
    and the opener takes the new key up for the chunks after it."""
    reader = Repository.init(storage, master)
    opener = ChunkOpener(reader)
    writer = Repository.open(storage, master)
    writer.rotate_master_key(master, new_data_key=True)
    for data in (text_bytes(rng, 2000), text_bytes(rng, 3000)):
        chunk_id, blob = sealed(writer, data)
        assert bytes(opener.open(chunk_id, blob, len(data))) == data
    assert writer.keyring.current_key_id in reader.keyring.data_keys
