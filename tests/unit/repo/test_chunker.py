"""Content-defined chunking (FastCDC with a seeded gear table) and keyed chunk ids."""

from __future__ import annotations

import io
import random

import blake3
import pytest

from app.repo.chunker import Chunker, ChunkerParams, ChunkIds
from tests.unit.repo.support import SEED, SMALL_CHUNKS

MiB = 1024 * 1024
DEFAULTS = ChunkerParams()


@pytest.fixture(scope="module")
def data() -> bytes:
    """8 MiB of seeded random bytes, shared by the module's tests."""
    return random.Random(f"{SEED}/chunker").randbytes(8 * MiB)


def cut_lengths(chunker: Chunker, data: bytes) -> list[int]:
    return [len(piece) for piece in chunker.cut(data)]


@pytest.mark.parametrize("params", [DEFAULTS, SMALL_CHUNKS], ids=["defaults", "small"])
def test_chunks_concatenate_back_to_the_input(data: bytes, params: ChunkerParams) -> None:
    pieces = [bytes(piece) for piece in Chunker(params, 12345).cut(data)]
    assert len(pieces) > 1
    assert b"".join(pieces) == data


@pytest.mark.parametrize("params", [DEFAULTS, SMALL_CHUNKS], ids=["defaults", "small"])
def test_chunk_sizes_are_within_bounds_except_the_last(data: bytes, params: ChunkerParams) -> None:
    for seed in (1, 2**62 + 17):
        lengths = cut_lengths(Chunker(params, seed), data)
        for length in lengths[:-1]:
            assert params.min_size <= length <= params.max_size
        assert 0 < lengths[-1] <= params.max_size


def test_average_size_is_near_the_target(data: bytes) -> None:
    lengths = cut_lengths(Chunker(SMALL_CHUNKS, 7), data)
    mean = sum(lengths) / len(lengths)
    assert SMALL_CHUNKS.avg_size / 2 <= mean <= SMALL_CHUNKS.avg_size * 2


def test_same_params_and_seed_cut_the_same_way(data: bytes) -> None:
    for params in (DEFAULTS, SMALL_CHUNKS):
        assert cut_lengths(Chunker(params, 99), data) == cut_lengths(Chunker(params, 99), data)
    chunker = Chunker(SMALL_CHUNKS, 99)
    first = cut_lengths(chunker, data)
    assert cut_lengths(chunker, data) == first, "an instance keeps no state between buffers"


@pytest.mark.parametrize("params", [DEFAULTS, SMALL_CHUNKS], ids=["defaults", "small"])
def test_another_seed_cuts_elsewhere(data: bytes, params: ChunkerParams) -> None:
    def cut_points(seed: int) -> set[int]:
        points, position = set(), 0
        for length in cut_lengths(Chunker(params, seed), data)[:-1]:
            position += length
            points.add(position)
        return points

    first, second = cut_points(1), cut_points(2)
    assert first != second
    assert len(first & second) <= max(1, len(first) // 4), "cut points mostly differ between seeds"


def test_stream_cuts_like_cut(data: bytes) -> None:
    """Files are cut from a stream or from a buffer; both must give the same chunks (deduplication)."""
    chunker = Chunker(SMALL_CHUNKS, 4242)
    streamed = [bytes(piece.data) for piece in chunker.stream(io.BytesIO(data))]
    assert streamed == [bytes(piece) for piece in chunker.cut(data)]


@pytest.mark.parametrize("size", [1, 1000, SMALL_CHUNKS.min_size - 1, SMALL_CHUNKS.min_size])
def test_data_up_to_min_size_is_one_chunk(data: bytes, size: int) -> None:
    pieces = list(Chunker(SMALL_CHUNKS, 3).cut(data[:size]))
    assert len(pieces) == 1
    assert bytes(pieces[0]) == data[:size]


def test_data_just_over_min_size_is_cut_completely(data: bytes) -> None:
    piece = data[: SMALL_CHUNKS.min_size + 1]
    assert b"".join(bytes(p) for p in Chunker(SMALL_CHUNKS, 3).cut(piece)) == piece


def test_empty_data_has_no_chunks() -> None:
    assert list(Chunker(SMALL_CHUNKS, 3).cut(b"")) == []


def test_memoryview_input_cuts_like_bytes(data: bytes) -> None:
    chunker = Chunker(SMALL_CHUNKS, 5)
    assert cut_lengths(chunker, memoryview(data)[: 2 * MiB]) == cut_lengths(chunker, data[: 2 * MiB])


@pytest.mark.parametrize(
    ("params", "at_least"), [(SMALL_CHUNKS, 0.7), (DEFAULTS, 0.5)], ids=["small", "defaults"]
)
def test_an_insertion_in_the_middle_leaves_most_chunks_unchanged(
    data: bytes, params: ChunkerParams, at_least: float
) -> None:
    rng = random.Random(f"{SEED}/insertion")
    ids = ChunkIds(rng.randbytes(32))
    middle = len(data) // 2
    edited = data[:middle] + rng.randbytes(100) + data[middle:]
    chunker = Chunker(params, 77)
    before = [ids.of(piece) for piece in chunker.cut(data)]
    after = [ids.of(piece) for piece in chunker.cut(edited)]
    shared = set(before) & set(after)
    assert len(shared) >= at_least * len(before)
    assert len(set(before) - shared) <= 3, "only the chunks around the edit change"
    # the chunks before the edit are untouched and in order
    assert after[: len(before) // 3] == before[: len(before) // 3]


# Chunk ids ---------------------------------------------------------------------------------------------


def test_chunk_id_is_keyed_blake3_hex(data: bytes) -> None:
    rng = random.Random(f"{SEED}/ids")
    key = rng.randbytes(32)
    piece = data[:100_000]
    chunk_id = ChunkIds(key).of(piece)
    assert chunk_id == blake3.blake3(piece, key=key).hexdigest()
    assert len(chunk_id) == 64 and int(chunk_id, 16) >= 0
    assert chunk_id != blake3.blake3(piece).hexdigest(), "the id is keyed"
    assert ChunkIds(key).of(memoryview(piece)) == chunk_id


def test_different_id_keys_give_different_ids(data: bytes) -> None:
    rng = random.Random(f"{SEED}/ids2")
    a, b = ChunkIds(rng.randbytes(32)), ChunkIds(rng.randbytes(32))
    for size in (0, 1, 4096):
        assert a.of(data[:size]) != b.of(data[:size])
    assert a.of(data[:10]) != a.of(data[1:11])


def test_chunk_ids_repr_hides_the_key() -> None:
    key = bytes(range(32))
    assert key.hex() not in repr(ChunkIds(key))
