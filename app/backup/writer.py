"""The chunk writer: deduplicate, seal, pack and upload chunks; index each pack once it is durable."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from app.repo.pack import PackBuilder, PackEntry
from app.repo.repository import Repository

#: Called from an upload thread after a pack is durable, before its chunks may be referenced.
PackRecorder = Callable[[str, int, Sequence[PackEntry]], None]


@dataclass
class WriterStats:
    chunks: int = 0
    new_chunks: int = 0
    bytes_new: int = 0
    bytes_stored: int = 0
    packs: int = 0


class ChunkWriter:
    """Thread-safe: many reader threads call `store`; packs upload on their own threads.

    A chunk id in `known` (indexed, durable; only read here) or in `claimed` (sealed earlier by this
    writer) is never sealed again; `flush` waits for every claimed chunk's pack before anything may
    name it.
    """

    def __init__(
        self,
        repo: Repository,
        known: set[str],
        record: PackRecorder,
        *,
        level: int | None,
        upload_threads: int = 2,
        max_pending_packs: int = 4,
        storage_class: str | None = None,
        claim: Callable[[str], bool] | None = None,
    ) -> None:
        self._repo = repo
        self._known = known
        self.claimed: set[str] = set()
        #: Asks the processes of one local backup which of them stores a chunk (app/backup/claims.py).
        self._claim = claim
        self._record = record
        self._level = level
        self._storage_class = storage_class
        self._lock = threading.Lock()
        self._builder = PackBuilder()
        self._pool = ThreadPoolExecutor(upload_threads, thread_name_prefix="pack-upload")
        self._slots = threading.BoundedSemaphore(max_pending_packs)
        self._uploads: list[Future[None]] = []
        self.stats = WriterStats()

    def store(self, data: bytes | memoryview) -> tuple[str, bool]:
        """The chunk id of `data` and whether it was new: stored unless the repository holds it."""
        chunk_id = self._repo.chunk_ids.of(data)
        with self._lock:
            self.stats.chunks += 1
            if chunk_id in self._known or chunk_id in self.claimed:
                return chunk_id, False
            if self._claim is not None and not self._claim(chunk_id):
                return chunk_id, False  # another process of this backup stores it
            self.claimed.add(chunk_id)
        blob = self._repo.seal_chunk(chunk_id, data, self._level)
        full = None
        with self._lock:
            self._builder.add(chunk_id, blob, len(data))
            self.stats.new_chunks += 1
            self.stats.bytes_new += len(data)
            if self._builder.size >= self._repo.pack_target_size:
                full, self._builder = self._builder, PackBuilder()
        if full is not None:
            self._submit(full)
        return chunk_id, True

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
            data = self._repo.finish_pack(pack_id, builder)
            self._repo.put_pack(pack_id, data, self._storage_class)
            self._record(pack_id, len(data), builder.entries)
            with self._lock:
                self.stats.packs += 1
                self.stats.bytes_stored += len(data)
        finally:
            self._slots.release()

    def flush(self) -> None:
        """Upload the open pack and wait for every upload; re-raise the first failure."""
        with self._lock:
            last, self._builder = self._builder, PackBuilder()
        if len(last):
            self._submit(last)
        with self._lock:
            uploads = list(self._uploads)
        for future in uploads:
            future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
