"""Reading one file into chunks, opened safely below its source (app/sources/confined.py), and noticing
when it was replaced since the walk or changes while it is read."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from app.backup.blocks import BlockChunker
from app.backup.writer import ChunkWriter, DeferredStore
from app.repo.chunker import Chunker
from app.sources.confined import SWAPPED, Seen, SourceRoot, swapped, swapped_warning
from app.sources.files import Entry

READ_ATTEMPTS = 3
SMALL_FILE = 1 << 20
#: Chunks of data in memory (a small file, a big file's piece) whose ids the index is asked at once.
LOOKUP_CHUNKS = 64

#: Called with the bytes just read; progress bars hang off it.
ProgressFn = Callable[[int], None]

#: Bytes of a block-aligned file (app/backup/blocks.py) read and stored at once, into a buffer each
#: thread reuses: a fresh 32 MiB `bytes` per piece cost the kernel a page fault and a zeroed page for
#: every 4 KiB read (~8 % of a worker's CPU in a full base backup).
BLOCK_WINDOW = 8 << 20
_local = threading.local()


@dataclass
class ReadResult:
    chunks: list[str]
    bytes_read: int  # over every attempt
    bytes_new: int
    warning: str | None = None
    stored: int = 0  # what the stored copy holds (the last attempt's bytes)
    code: str | None = None  # the warning's code: SWAPPED (app/sources/confined.py) or None


def _signature(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_file(
    source: SourceRoot,
    entry: Entry,
    chunker: Chunker,
    writer: ChunkWriter | DeferredStore,
    progress: ProgressFn,
    *,
    attempts: int = READ_ATTEMPTS,
    piece: tuple[int, int | None] | None = None,
    seen: Seen | None = None,
) -> ReadResult:
    """Chunk and store the file at `entry.path` below `source` (or only its `piece`: offset and length,
    None = to its end); a file that keeps changing is stored as last read, with a warning (none when
    `attempts` is 1: the caller expects changes, as PostgreSQL's WAL replay repairs them). A file that
    is another one than the walk saw (`seen`) is read, with a SWAPPED warning. ChangedUnderWalk (gone,
    not a regular file any more, a symlink on its path) and OSError (unreadable) propagate for the
    caller's policy."""
    total = new = 0
    other_file = False
    for _attempt in range(attempts):
        fd, before = source.open_file(entry.path)
        try:
            if seen is not None and swapped(before, seen):
                other_file = True
                entry.mode, entry.uid, entry.gid = stat.S_IMODE(before.st_mode), before.st_uid, before.st_gid
                entry.inode = before.st_ino
            chunks: list[str] = []
            expected = before.st_size
            streamed = False
            read = 0
            batches: Iterator[list[memoryview]]
            if isinstance(chunker, BlockChunker):
                offset, length = piece if piece is not None else (0, None)
                if piece is not None:
                    expected = length if length is not None else max(0, before.st_size - offset)
                chunks, read, fresh = _read_blocks(fd, chunker.size, writer, progress, offset, length)
                new += fresh
                batches = iter(())  # stored already
            elif piece is not None:
                data = _read_range(fd, piece[0], piece[1])
                expected = piece[1] if piece[1] is not None else max(0, before.st_size - piece[0])
                batches = _groups(chunker.cut(data))
            elif before.st_size <= getattr(chunker, "in_memory_bytes", SMALL_FILE):
                data = _read_all(fd, before.st_size)
                batches = _groups(chunker.cut(data))
            else:  # a streamed chunk's memory is reused by the next: stored one at a time
                handle = os.fdopen(fd, "rb", buffering=0, closefd=False)
                batches = ([c.data] for c in chunker.stream(handle))
                streamed = True
            for batch in batches:
                stored = [writer.store(batch[0])] if streamed else writer.store_many(batch)
                for cut, (chunk_id, is_new) in zip(batch, stored, strict=True):
                    chunks.append(chunk_id)
                    read += len(cut)
                    new += len(cut) if is_new else 0
                    progress(len(cut))
            after = os.fstat(fd)
        finally:
            os.close(fd)
        total += read
        entry.size, entry.mtime_ns, entry.ctime_ns = before.st_size, before.st_mtime_ns, before.st_ctime_ns
        if attempts == 1:
            entry.size = read  # what was stored; the recorded mtime is the older one, so it is re-read
            return ReadResult(chunks, total, new, stored=read)
        if _signature(before) == _signature(after) and read == expected:
            if other_file:
                return ReadResult(chunks, total, new, swapped_warning().reason, read, SWAPPED)
            return ReadResult(chunks, total, new, stored=read)
    return ReadResult(
        chunks,
        total,
        new,
        f"changed while being read ({attempts} attempts); the stored copy may mix old and new content",
        stored=read,
        code=SWAPPED if other_file else None,
    )


def _read_blocks(
    fd: int,
    size: int,
    writer: ChunkWriter | DeferredStore,
    progress: ProgressFn,
    offset: int,
    length: int | None,
) -> tuple[list[str], int, int]:
    """The block groups of `length` bytes of the file from `offset` (None: to its end, fewer if it
    ends first), read BLOCK_WINDOW bytes at a time into this thread's buffer and stored a window at a
    time (`store_blocks`): their ids, the bytes read and the bytes that were new."""
    buffer: bytearray | None = getattr(_local, "window", None)
    if buffer is None:
        buffer = _local.window = bytearray(BLOCK_WINDOW)
    step = len(buffer) - len(buffer) % size  # a whole number of groups: every window starts on one
    chunks: list[str] = []
    read = new = 0
    with memoryview(buffer) as view:
        while length is None or read < length:
            want = step if length is None else min(step, length - read)
            got = 0
            while got < want:  # a short read before the end: read on
                count = os.preadv(fd, [view[got:want]], offset + read + got)
                if not count:
                    break
                got += count
            if not got:
                break
            ids, fresh = writer.store_blocks(view[:got], size)
            chunks.extend(ids)
            read += got
            new += fresh
            progress(got)
            if got < want:
                break  # the end of the file
    return chunks, read, new


def _groups(cuts: Iterator[memoryview]) -> Iterator[list[memoryview]]:
    """Cuts of data held in memory, LOOKUP_CHUNKS at a time: one index lookup for each group."""
    group: list[memoryview] = []
    for cut in cuts:
        group.append(cut)
        if len(group) == LOOKUP_CHUNKS:
            yield group
            group = []
    if group:
        yield group


def _read_all(fd: int, size: int) -> bytes:
    """The file from its start to its end: `size` bytes as its fstat said, or what it holds now if it
    grew or shrank since. Two reads for a file that did not change (FileIO.readall, which this replaces
    for the many small files of a tree, also seeks and stats it again)."""
    data = os.read(fd, size + 1)  # + 1: a file that grew is read on at once
    if not data:
        return data
    more = os.read(fd, max(size, 1 << 16))
    if not more:
        return data  # the common case: not joined, so not copied
    parts = [data, more]
    while more:
        more = os.read(fd, max(size, 1 << 16))
        parts.append(more)
    return b"".join(parts)


def _read_range(fd: int, offset: int, length: int | None) -> bytes:
    """`length` bytes from `offset` (None: to the end of the file), fewer if the file ends first."""
    parts: list[bytes] = []
    got = 0
    while length is None or got < length:
        part = os.pread(fd, (length - got) if length is not None else (8 << 20), offset + got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)
