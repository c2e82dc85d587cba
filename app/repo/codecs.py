"""Compression codecs by id (docs/FORMAT.md section 3). Compressors are per thread: zstd's are not
safe to share."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from enum import IntEnum

import zstandard

from app.errors import IntegrityError

#: A chunk is stored raw unless its first SAMPLE_SIZE bytes shrink by at least this fraction at level 1.
SAMPLE_SIZE = 64 * 1024
MIN_SAVING = 0.03


class Codec(IntEnum):
    RAW = 0
    ZSTD = 1


_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
    return cache[level]


def thread_decompressor() -> zstandard.ZstdDecompressor:
    """This thread's zstd decompressor (one per thread: they are not safe to share)."""
    return _decompressor()


def _decompressor() -> zstandard.ZstdDecompressor:
    dctx: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if dctx is None:
        dctx = _local.decompressor = zstandard.ZstdDecompressor()
    return dctx


def compress(data: bytes | memoryview, level: int | None, *, probe: bool = True) -> tuple[Codec, bytes | memoryview]:
    """`(codec, body)` of `data`: zstd at `level`, or raw (`data` itself, not copied) when `level` is
    None or compression does not pay. `encode` without joining the codec id to the body."""
    if level is not None:
        if probe and len(data) > SAMPLE_SIZE * 2:
            sample = _compressor(1).compress(data[:SAMPLE_SIZE])
            if len(sample) > SAMPLE_SIZE * (1 - MIN_SAVING):
                return Codec.RAW, data
        body = _compressor(level).compress(data)
        if len(body) < len(data):
            return Codec.ZSTD, body
    return Codec.RAW, data


def encode(data: bytes | memoryview, level: int | None, *, probe: bool = True) -> bytes:
    """`codec || body`: zstd at `level`, or raw when `level` is None or compression does not pay."""
    codec, body = compress(data, level, probe=probe)
    return b"".join((bytes([codec]), body))


def encode_parts(parts: Sequence[bytes | memoryview], level: int | None) -> bytes:
    """`encode(b"".join(parts), level, probe=False)` without joining the parts first: a large body
    (a 16 MiB WAL segment) behind a small head is compressed in place, never copied whole."""
    total = sum(len(part) for part in parts)
    if level is not None:
        stream = _compressor(level).compressobj(size=total)
        body = [stream.compress(part) for part in parts]
        body.append(stream.flush())
        if sum(len(piece) for piece in body) < total:
            return b"".join([bytes([Codec.ZSTD]), *body])
    return b"".join([bytes([Codec.RAW]), *parts])


def decode(payload: bytes | memoryview, what: str, max_size: int | None = None) -> bytes:
    """The plaintext of `codec || body`; an unknown codec or a bad frame names `what`."""
    if not payload:
        raise IntegrityError(f"{what}: empty payload")
    codec, body = payload[0], memoryview(payload)[1:]  # a view: zstd reads it without a copy
    if codec == Codec.RAW:
        return bytes(body)
    if codec == Codec.ZSTD:
        try:
            if max_size is not None:
                return _decompressor().decompress(body, max_output_size=max_size)
            return _decompressor().decompress(body)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{what}: zstd frame is corrupt ({exc})") from None
    raise IntegrityError(
        f"{what}: unknown codec id {codec}",
        hint="this repository was written by a newer equisplit-dr; upgrade to read it",
    )
