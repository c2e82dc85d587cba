"""Payload codecs (docs/FORMAT.md section 3): `codec(1) || body`, raw when compression does not pay."""

from __future__ import annotations

import random

import pytest
import zstandard

from app.errors import IntegrityError
from app.repo.codecs import SAMPLE_SIZE, Codec, decode, encode
from tests.unit.repo.support import text_bytes


@pytest.mark.parametrize("size", [0, 1, 1000, 200_000])
def test_raw_round_trip(rng: random.Random, size: int) -> None:
    data = rng.randbytes(size)
    payload = encode(data, None)
    assert payload == bytes([Codec.RAW]) + data
    assert decode(payload, "chunk x") == data


@pytest.mark.parametrize("size", [100, 10_000, 3 * SAMPLE_SIZE])
@pytest.mark.parametrize("level", [1, 3, 9])
def test_zstd_round_trip_of_text(rng: random.Random, size: int, level: int) -> None:
    data = text_bytes(rng, size)
    payload = encode(data, level)
    assert payload[0] == Codec.ZSTD == 1
    assert len(payload) < len(data)
    assert payload[1:4] == b"(\xb5/", "the body is one zstd frame"
    assert decode(payload, "chunk x") == data
    assert decode(payload, "chunk x", max_size=size) == data


def test_memoryview_input_encodes_like_bytes(rng: random.Random) -> None:
    data = text_bytes(rng, 5000)
    assert decode(encode(memoryview(data), 3), "x") == data
    assert decode(encode(memoryview(data), None), "x") == data


@pytest.mark.parametrize("size", [10, 4096, SAMPLE_SIZE, 2 * SAMPLE_SIZE + 1, 1024 * 1024])
def test_incompressible_data_is_stored_raw(rng: random.Random, size: int) -> None:
    data = rng.randbytes(size)
    payload = encode(data, 3)
    assert payload[0] == Codec.RAW == 0
    assert payload[1:] == data
    assert decode(payload, "chunk x") == data


def test_a_chunk_whose_first_64_kib_do_not_compress_is_stored_raw(rng: random.Random) -> None:
    """The probe looks at the first SAMPLE_SIZE bytes only, as the format says."""
    data = rng.randbytes(SAMPLE_SIZE) + text_bytes(rng, 4 * SAMPLE_SIZE)
    assert encode(data, 3)[0] == Codec.RAW
    payload = encode(data, 3, probe=False)
    assert payload[0] == Codec.ZSTD
    assert decode(payload, "chunk x") == data


def test_level_none_stores_even_text_raw(rng: random.Random) -> None:
    data = text_bytes(rng, 50_000)
    assert encode(data, None) == bytes([Codec.RAW]) + data


def test_empty_data_is_raw(rng: random.Random) -> None:
    assert encode(b"", 3) == bytes([Codec.RAW])
    assert decode(bytes([Codec.RAW]), "x") == b""


def test_empty_payload_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError, match="chunk abc: empty payload"):
        decode(b"", "chunk abc")


@pytest.mark.parametrize("codec_id", [2, 7, 255])
def test_unknown_codec_id_names_the_object(rng: random.Random, codec_id: int) -> None:
    what = "manifest 20261127T040000Z-a1b2c3"
    with pytest.raises(IntegrityError, match=f"{what}: unknown codec id {codec_id}") as caught:
        decode(bytes([codec_id]) + rng.randbytes(40), what)
    assert caught.value.hint is not None and "upgrade" in caught.value.hint


def test_corrupt_zstd_frame_is_an_integrity_error(rng: random.Random) -> None:
    data = text_bytes(rng, 20_000)
    payload = encode(data, 3)
    body = payload[1:]
    corrupt = [
        body[: len(body) // 2],  # truncated frame
        body[:-1],  # last byte missing
        b"\x00" * 4 + body[4:],  # bad frame magic
        rng.randbytes(len(body)),  # not a frame at all
        b"",  # no frame
    ]
    for bad in corrupt:
        with pytest.raises(IntegrityError, match="chunk c1: zstd frame is corrupt"):
            decode(bytes([Codec.ZSTD]) + bad, "chunk c1")


def test_frames_made_by_other_zstd_writers_decode(rng: random.Random) -> None:
    """A reader accepts any one zstd frame, with or without a content size in its header."""
    data = text_bytes(rng, 30_000)
    with_size = zstandard.ZstdCompressor(level=5).compress(data)
    assert decode(bytes([Codec.ZSTD]) + with_size, "x") == data
    streamed = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    without_size = streamed.compress(data) + streamed.flush()
    assert decode(bytes([Codec.ZSTD]) + without_size, "x", max_size=len(data)) == data
