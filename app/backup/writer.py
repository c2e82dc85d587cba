"""The chunk writer: deduplicate, seal, pack and upload chunks; index each pack once it is durable."""

from __future__ import annotations

import mmap
import secrets
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from app.backup.known import KnownChunks
from app.repo import codecs
from app.repo.format import Tier
from app.repo.pack import PackBuilder, PackEntry
from app.repo.repository import Repository

#: A pack buffer's room beyond the pack target: the last chunk's blob (4 MiB at most) and the index.
SPARE_ROOM = 5 << 20

#: Called from an upload thread after a pack is durable, before its chunks may be referenced.
PackRecorder = Callable[[str, int, Sequence[PackEntry]], None]

#: A block group (app/backup/blocks.py) whose zstd frame keeps more than this share of its bytes
#: (random or already-compressed pages) sends the next group of its run to zstd's fast level: on such
#: pages level -1 gives the same size at half the CPU of level 3 (docs/FORMAT.md section 3).
POOR_RATIO = 0.8
FAST_LEVEL = -1


@dataclass
class WriterStats:
    chunks: int = 0
    new_chunks: int = 0
    bytes_new: int = 0
    bytes_stored: int = 0
    packs: int = 0


class ChunkWriter:
    """Thread-safe: many reader threads call `store`; packs upload on their own threads.

    A chunk the index holds (`known`, asked in batches: `store_many`) or one sealed by this writer whose
    pack is not indexed yet (`pending`) is never sealed again; `flush` waits for every pending chunk's
    pack before anything may name it. Once a pack is indexed its ids leave `pending` for `known`'s
    bounded cache, so the writer's memory is bounded by the packs in flight, not by the backup.
    """

    def __init__(
        self,
        repo: Repository,
        known: KnownChunks,
        record: PackRecorder,
        *,
        level: int | None,
        upload_threads: int = 2,
        max_pending_packs: int = 4,
        storage_class: str | None = None,
        claim: Callable[[str], bool] | None = None,
        tier: str = Tier.STANDARD,
        retain_until: datetime | None = None,
        sealed: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self._repo = repo
        #: Told each chunk's sealed blob as it goes into a pack (manifest chunks: for the local cache).
        self._sealed = sealed
        self._known = known
        #: Sealed here, their pack not yet indexed.
        self.pending: set[str] = set()
        #: Asks the processes of one local backup which of them stores a chunk (app/backup/claims.py).
        self._claim = claim
        self._record = record
        self._level = level
        self._storage_class = storage_class
        self._tier = tier
        self._retain_until = retain_until  # S3 Object Lock of an archive's packs (docs/ARCHIVE.md)
        self._lock = threading.Lock()
        #: The buffer of an uploaded pack, for a next builder (one kept: more would only hold memory).
        self._buffers: list[bytearray | mmap.mmap] = []
        self._max_buffers = 1
        self._builder = PackBuilder(self._spare_buffer())
        self._pool = ThreadPoolExecutor(upload_threads, thread_name_prefix="pack-upload")
        self._slots = threading.BoundedSemaphore(max_pending_packs)
        self._uploads: list[Future[None]] = []
        self.stats = WriterStats()

    def store(self, data: bytes | memoryview) -> tuple[str, bool]:
        """The chunk id of `data` and whether it was new: stored unless the repository holds it."""
        return self.store_many([data])[0]

    def chunk_id_of(self, data: bytes | memoryview) -> str:
        return self._repo.chunk_ids.of(data)

    def store_many(self, pieces: Sequence[bytes | memoryview]) -> list[tuple[str, bool]]:
        """`store` for each piece, the index asked once for all of them; a piece repeated within the
        call is stored once. Each piece's memory must stay valid until the call returns."""
        return self.store_identified([self._repo.chunk_ids.of(piece) for piece in pieces], pieces)

    def store_identified(
        self, ids: Sequence[str], pieces: Sequence[bytes | memoryview]
    ) -> list[tuple[str, bool]]:
        """`store_many` of pieces whose ids (`chunk_ids.of`) the caller computed already."""
        indexed = self._lookup(ids)
        return [self._store_one(chunk_id, piece, indexed) for chunk_id, piece in zip(ids, pieces, strict=True)]

    def store_blocks(self, data: memoryview, size: int) -> tuple[list[str], int]:
        """The block groups of `data` (cut every `size` bytes, the last one shorter), each stored
        unless the repository holds it, as `store_many` would: their ids in order and the bytes that
        were new. One index lookup and one pass for the whole run, with no per-group object beyond
        its view, id and frame: a relation file has 32 groups a MiB. `data` must stay valid until the
        call returns (nothing keeps a view of it after)."""
        groups = [data[start : start + size] for start in range(0, len(data), size)]
        of = self._repo.chunk_ids.of
        ids = [of(group) for group in groups]
        indexed = self._lookup(ids)
        with self._lock:
            fresh = [number for number, chunk_id in enumerate(ids) if self._take(chunk_id, indexed)]
        if not fresh:
            return ids, 0
        encoded = self._encode_groups([groups[number] for number in fresh])  # zstd releases the GIL
        full: list[PackBuilder] = []
        with self._lock:
            for number, frame in zip(fresh, encoded, strict=True):
                if (builder := self._seal(ids[number], frame, len(groups[number]))) is not None:
                    full.append(builder)
        for builder in full:
            self._submit(builder)
        return ids, sum(len(groups[number]) for number in fresh)

    def _encode_groups(self, groups: list[memoryview]) -> list[tuple[codecs.Codec, bytes | memoryview]]:
        """`codecs.compress` of each group of a run, at the writer's level, or at FAST_LEVEL for a group
        that follows one that hardly compressed (POOR_RATIO); raw where zstd does not shrink it."""
        level = self._level
        if level is None:
            return [(codecs.Codec.RAW, group) for group in groups]
        compress = codecs.compress
        fast = min(level, FAST_LEVEL)
        encoded = []
        poor = False
        for group in groups:
            codec, body = compress(group, fast if poor else level, probe=False)
            poor = len(body) > POOR_RATIO * len(group)
            encoded.append((codec, body))
        return encoded

    def _store_one(self, chunk_id: str, data: bytes | memoryview, indexed: set[str]) -> tuple[str, bool]:
        with self._lock:
            if not self._take(chunk_id, indexed):
                return chunk_id, False
        encoded = codecs.compress(data, self._level)  # outside the lock: zstd releases the GIL
        with self._lock:
            full = self._seal(chunk_id, encoded, len(data))
        if full is not None:
            self._submit(full)
        return chunk_id, True

    def _lookup(self, ids: Sequence[str]) -> set[str]:
        """Counts `ids` as this writer's chunks; those of them the index holds, asked once (ids pending
        here are not asked: `_take` skips them)."""
        with self._lock:
            self.stats.chunks += len(ids)
            unsure = [chunk_id for chunk_id in ids if chunk_id not in self.pending]
        return self._known.present(unsure) if unsure else set()

    def _take(self, chunk_id: str, indexed: set[str]) -> bool:
        """(Lock held.) Whether this writer stores `chunk_id`, which is then pending: not if the index
        answered it present, this writer has it pending, a pack indexed since the lookup holds it
        (`holds`), or another process of this backup claimed it."""
        if chunk_id in indexed or chunk_id in self.pending or self._known.holds(chunk_id):
            return False
        if self._claim is not None and not self._claim(chunk_id):
            return False
        self.pending.add(chunk_id)
        return True

    def _seal(
        self, chunk_id: str, encoded: tuple[codecs.Codec, bytes | memoryview], raw_length: int
    ) -> PackBuilder | None:
        """(Lock held.) Seal a chunk straight into the open pack's buffer (AES-GCM: ~0.3 ms a MiB); the
        pack if that filled it, for the caller to submit outside the lock."""
        start = self._builder.size
        self._repo.pack_chunk(self._builder, chunk_id, encoded, raw_length)
        if self._sealed is not None:
            self._sealed(chunk_id, bytes(self._builder.buffer[start : self._builder.size]))
        self.stats.new_chunks += 1
        self.stats.bytes_new += raw_length
        if self._builder.size < self._repo.pack_target_size:
            return None
        full, self._builder = self._builder, PackBuilder(self._spare_buffer())
        return full

    def _spare_buffer(self) -> bytearray | mmap.mmap:
        """A buffer for the next pack (call with the lock held): an uploaded pack's, or a new one with
        room for a full pack, its last chunk and its index."""
        if self._buffers:
            return self._buffers.pop()
        # An anonymous mapping, not a bytearray: malloc would hand back a freed pack's heap memory and
        # zero all of it first (calloc), paging in the spare room too; a fresh mapping's pages are zero
        # until written, and go back to the system when the buffer is dropped.
        return mmap.mmap(-1, self._repo.pack_target_size + SPARE_ROOM)

    def _submit(self, builder: PackBuilder) -> None:
        self._slots.acquire()  # bounds memory: at most max_pending_packs packs waiting or uploading
        try:
            future = self._pool.submit(self._upload, builder)
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._uploads.append(future)

    def _upload(self, builder: PackBuilder) -> None:
        try:
            pack_id = secrets.token_hex(32)
            data = self._repo.finish_pack(pack_id, builder, self._tier)  # a view of the builder's buffer
            size = len(data)
            self._repo.put_pack(pack_id, data, self._storage_class, self._retain_until)
            reusable = _released(data)  # the backend keeps no reference (app/storage/base.py)
            self._record(pack_id, size, builder.entries)
            stored = [entry.chunk_id for entry in builder.entries]
            self._known.remember(stored)  # before leaving `pending`: no moment names neither
            with self._lock:
                self.pending.difference_update(stored)
                self.stats.packs += 1
                self.stats.bytes_stored += size
                if reusable and len(self._buffers) < self._max_buffers:
                    self._buffers.append(builder.buffer)
        finally:
            self._slots.release()

    def flush(self) -> None:
        """Upload the open pack and wait for every upload; re-raise the first failure."""
        with self._lock:
            last, self._builder = self._builder, PackBuilder(self._spare_buffer())
        if len(last):
            self._submit(last)
        with self._lock:
            uploads = list(self._uploads)
        for future in uploads:
            future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _released(view: memoryview) -> bool:
    """Release `view`; whether its buffer may be reused (nothing else holds a view of it)."""
    try:
        view.release()
    except BufferError:
        return False
    return True


class DeferredStore:
    """Collects the in-memory chunks of a batch of small files and stores them together, so the index
    is asked once per batch, not once per file. `store_many` names each chunk at once and answers
    "not new"; `drain` stores what was collected and returns the bytes that were new. A streamed chunk
    (`store`: its memory is reused) is stored at once. Nothing may name the collected chunks as stored
    before `drain` returned."""

    def __init__(self, writer: ChunkWriter, max_chunks: int = 256, max_bytes: int = 8 << 20) -> None:
        self._writer = writer
        self._ids: list[str] = []
        self._pieces: list[bytes | memoryview] = []
        self._bytes = 0
        self._max_chunks, self._max_bytes = max_chunks, max_bytes
        self.bytes_new = 0

    def store_blocks(self, data: memoryview, size: int) -> tuple[list[str], int]:
        """`ChunkWriter.store_blocks`, at once: the caller counts the new bytes it returns."""
        return self._writer.store_blocks(data, size)

    def store(self, data: bytes | memoryview) -> tuple[str, bool]:
        chunk_id, is_new = self._writer.store(data)
        self.bytes_new += len(data) if is_new else 0
        return chunk_id, False  # counted here: `drain` reports it

    def store_many(self, pieces: Sequence[bytes | memoryview]) -> list[tuple[str, bool]]:
        ids = [self._writer.chunk_id_of(piece) for piece in pieces]
        self._ids.extend(ids)
        self._pieces.extend(pieces)
        self._bytes += sum(len(piece) for piece in pieces)
        if len(self._ids) >= self._max_chunks or self._bytes >= self._max_bytes:
            self._store_collected()
        return [(chunk_id, False) for chunk_id in ids]

    def drain(self) -> int:
        """Store every collected chunk; the new bytes since the last drain."""
        self._store_collected()
        new, self.bytes_new = self.bytes_new, 0
        return new

    def _store_collected(self) -> None:
        if self._ids:
            outcomes = self._writer.store_identified(self._ids, self._pieces)
            self.bytes_new += sum(
                len(piece) for piece, (_id, is_new) in zip(self._pieces, outcomes, strict=True) if is_new
            )
        self._ids, self._pieces, self._bytes = [], [], 0
