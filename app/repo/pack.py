"""Packs: many chunk blobs plus their own encrypted index (docs/FORMAT.md section 5)."""

from __future__ import annotations

import mmap
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
    """Collects sealed blobs in one buffer until the pack is big enough to upload. Blobs are sealed
    straight into it (`reserve`); a finished pack's buffer may be handed to the next builder (`buffer`),
    so its pages are not allocated and faulted in again for every pack."""

    def __init__(self, buffer: bytearray | mmap.mmap | None = None) -> None:
        self._buffer: bytearray | mmap.mmap = buffer if buffer is not None else bytearray()
        self._size = 0
        self.entries: list[PackEntry] = []

    @property
    def size(self) -> int:
        return self._size

    @property
    def buffer(self) -> bytearray | mmap.mmap:
        """The buffer, for a next builder once this pack's bytes (`finish`) are no longer used."""
        return self._buffer

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, chunk_id: str, blob: bytes | memoryview, raw_length: int) -> None:
        with self.reserve(len(blob)) as region:
            region[:] = blob
        self.commit(chunk_id, len(blob), raw_length)

    def reserve(self, length: int) -> memoryview:
        """Room for `length` more bytes at the end of the pack, to write a blob into before `commit`;
        release the view before the next `reserve` (the buffer may grow)."""
        end = self._size + length
        if end > len(self._buffer):  # rare: a writer's buffer has room for a pack and its last blob
            grown = bytearray(max(end, len(self._buffer) + len(self._buffer) // 4))
            grown[: self._size] = self._buffer[: self._size]
            self._buffer = grown
        return memoryview(self._buffer)[self._size : end]

    def commit(self, chunk_id: str, length: int, raw_length: int) -> None:
        """Count the `length` bytes written at the end of the pack as the blob of `chunk_id`."""
        self.entries.append(PackEntry(chunk_id, self._size, length, raw_length))
        self._size += length

    def index_plaintext(self) -> bytes:
        return b"".join(
            _RECORD.pack(bytes.fromhex(e.chunk_id), e.offset, e.length, e.raw_length) for e in self.entries
        )

    def finish(self, sealed_index: bytes) -> memoryview:
        """The pack's bytes: blobs, then the sealed index, then the trailer. A view of the buffer, not a
        copy: valid until the buffer is reused."""
        tail = sealed_index + _TRAILER.pack(len(sealed_index), PACK_MAGIC)
        with self.reserve(len(tail)) as region:
            region[:] = tail
        self._size += len(tail)
        return memoryview(self._buffer)[: self._size]


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
