"""Packs: many chunk blobs plus their own encrypted index (docs/FORMAT.md section 5)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from app.errors import IntegrityError
from app.repo.format import CHUNK_ID_SIZE, PACK_INDEX_RECORD, PACK_MAGIC, PACK_TRAILER

_RECORD = struct.Struct("<32sQII")
_TRAILER = struct.Struct("<I4s")
assert _RECORD.size == PACK_INDEX_RECORD and _TRAILER.size == PACK_TRAILER

Blob = TypeVar("Blob")


@dataclass(frozen=True)
class PackEntry:
    """Where one chunk's blob sits in a pack."""

    chunk_id: str
    offset: int
    length: int
    raw_length: int


class PackBuilder:
    """Collects sealed blobs in memory until the pack is big enough to upload."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.entries: list[PackEntry] = []

    @property
    def size(self) -> int:
        return len(self._buffer)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, chunk_id: str, blob: bytes, raw_length: int) -> None:
        self.entries.append(PackEntry(chunk_id, len(self._buffer), len(blob), raw_length))
        self._buffer += blob

    def index_plaintext(self) -> bytes:
        return b"".join(
            _RECORD.pack(bytes.fromhex(e.chunk_id), e.offset, e.length, e.raw_length) for e in self.entries
        )

    def finish(self, sealed_index: bytes) -> bytes:
        """The pack's bytes: blobs, then the sealed index, then the trailer."""
        self._buffer += sealed_index
        self._buffer += _TRAILER.pack(len(sealed_index), PACK_MAGIC)
        return bytes(self._buffer)


def parse_trailer(tail: bytes, pack_id: str) -> int:
    """The length of the sealed index, from the pack's last PACK_TRAILER bytes."""
    if len(tail) != PACK_TRAILER:
        raise IntegrityError(f"pack {pack_id} is truncated")
    length, magic = _TRAILER.unpack(tail)
    if magic != PACK_MAGIC:
        raise IntegrityError(f"pack {pack_id} has no pack trailer (bad magic)")
    return int(length)


def parse_index(plaintext: bytes, pack_id: str) -> list[PackEntry]:
    if len(plaintext) % PACK_INDEX_RECORD:
        raise IntegrityError(f"pack {pack_id}: index length {len(plaintext)} is not a multiple of 48")
    entries = []
    for raw_id, offset, length, raw_length in _RECORD.iter_unpack(plaintext):
        assert len(raw_id) == CHUNK_ID_SIZE
        entries.append(PackEntry(raw_id.hex(), offset, length, raw_length))
    return entries


def coalesce(
    blobs: Iterable[Blob], span: Callable[[Blob], tuple[int, int]], *, gap: int, limit: int
) -> Iterator[tuple[int, int, list[Blob]]]:
    """Blobs of one pack, in offset order (`span`: a blob's offset and length), grouped into ranged
    reads `(start, end, blobs)`: a blob joins the read before it when it starts less than `gap` bytes
    after that read's end and the read stays within `limit` bytes (a bigger blob is a read of its own)."""
    group: list[Blob] = []
    start = end = 0
    for blob in blobs:
        offset, length = span(blob)
        if group and (offset - end >= gap or max(end, offset + length) - start > limit):
            yield start, end, group
            group = []
        if not group:
            start = end = offset
        group.append(blob)
        end = max(end, offset + length)
    if group:
        yield start, end, group
