"""Writing a restore's files: the chunks of each pack read with as few ranged reads as possible, opened
(decrypted, decompressed, checked against their ids) and written at their offsets into a partial file
in the file's own directory, which gets its metadata on its descriptor and is renamed into place once
whole. Imports no catalog and no settings: a restore's worker processes (app/restore/worker.py) run
this alone."""

from __future__ import annotations

import contextlib
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from app.errors import IntegrityError, RestoreTargetError
from app.repo.opener import ChunkOpener
from app.repo.pack import coalesce
from app.repo.repository import Repository
from app.restore import metadata
from app.restore.sparse import write_sparse
from app.restore.target import safe_relpath
from app.restore.tree import TargetTree, fail, partial_name, split

#: Blobs of one pack less than this apart are fetched with one ranged read (app/repo/pack.py: coalesce).
COALESCE_GAP = 1 << 20
MAX_READ = 32 << 20


#: Where a chunk's blob lies: (pack id, offset, sealed length, plain length); the catalog's
#: ChunkLocation, or a plain tuple handed to a worker process (which imports no catalog; a tuple is
#: pickled in less than half the time of a NamedTuple, and a restore hands over ~32 a MiB).
Located = tuple[str, int, int, int]


class _FileState:
    """One file being restored: created under a short temporary name in its own directory by the
    first pack worker that has a chunk for it, written at its offsets, given its metadata and renamed
    into place by whichever worker writes its last chunk. A piece of a big file (`piece`: shared out
    over processes, app/restore/procpool.py) writes into the partial file its process's parent made
    (the entry's `partial`), and leaves finishing it to that parent."""

    __slots__ = (
        "created",
        "entry",
        "fd",
        "lock",
        "name",
        "parent",
        "partial",
        "path",
        "piece",
        "remaining",
        "whole",
    )

    def __init__(self, path: str, entry: dict[str, Any], remaining: int, *, piece: bool = False) -> None:
        self.path = path
        self.parent, self.name = split(path)
        self.partial: str = entry["partial"] if piece else ""  # named when created
        self.entry = entry
        self.remaining = remaining
        self.piece = piece
        #: One chunk holds all of it (most small files): created, written, finished in one go.
        self.whole = remaining == 1 and not piece and not entry.get("sparse")
        self.created = False
        self.fd: int | None = None
        self.lock = threading.Lock()

    def _open(self, tree: TargetTree) -> int:
        with tree.dir(self.parent) as dir_fd:
            if self.piece:
                return os.open(self.partial, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            self.partial = partial_name(self.name)
            fd = create_partial(dir_fd, self.partial)
            self.created = True
            return fd

    def write_whole(self, tree: TargetTree, data: bytes | memoryview) -> None:
        """A file of one chunk (most small files): created, written in one call and given its metadata
        with one descriptor of its directory. Where nothing may stand at its name (a restore that
        replaces nothing: the target was empty, or --skip-existing left out what it holds) it is
        created at its name (O_EXCL, never through a link), saving a rename and its directory
        lookups; else under a partial name, renamed over what stands there."""
        with tree.dir(self.parent) as dir_fd:
            self.partial = partial_name(self.name) if tree.replace else self.name
            fd = create_partial(dir_fd, self.partial)
            self.created = True  # removed on failure as a partial file is
            try:
                write_parts(fd, [data], 0)
                metadata.apply_to_fd(fd, self.entry)
            finally:
                os.close(fd)
            self.remaining = 0
            if self.partial != self.name:
                tree.move_into_place(dir_fd, self.partial, self.name, self.path)
            self.created = False

    def write(self, tree: TargetTree, parts: list[bytes | memoryview], offset: int) -> bool:
        """Write chunks that follow one another in the file from `offset`, with one system call where
        it can; True when they were the file's last ones (then call finish)."""
        with self.lock:
            if self.fd is None:
                self.fd = self._open(tree)
                sized = self.remaining > 1 or self.entry.get("sparse")  # sized first: holes need it
                if sized and not self.piece:
                    os.ftruncate(self.fd, self.entry["size"])
            if self.entry.get("sparse"):
                for part in parts:
                    write_sparse(self.fd, part, offset)
                    offset += len(part)
            else:
                write_parts(self.fd, parts, offset)
            self.remaining -= len(parts)
            return self.remaining == 0

    def finish(self, tree: TargetTree) -> None:
        """Metadata on the open file, then the rename into place; a piece only closes its descriptor."""
        if self.fd is None:  # an empty file
            self.fd = self._open(tree)
        try:
            if not self.piece:
                metadata.apply_to_fd(self.fd, self.entry)
        finally:
            os.close(self.fd)
            self.fd = None
        if not self.piece:
            with tree.dir(self.parent) as dir_fd:
                tree.move_into_place(dir_fd, self.partial, self.name, self.path)
            self.created = False

    def discard(self, tree: TargetTree) -> None:
        with self.lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None
        if self.created:  # a piece's file is its parent process's to remove
            with contextlib.suppress(OSError, RestoreTargetError), tree.dir(self.parent) as dir_fd:
                os.unlink(self.partial, dir_fd=dir_fd)
            self.created = False


def create_partial(dir_fd: int, name: str) -> int:
    """Create the partial file `name` (never an existing name, never through a link), mode 0600."""
    return os.open(
        name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
    )


def chunks_of(entry: dict[str, Any]) -> list[str]:
    """The chunks a file entry restores, or a piece of a big file (`piece`: {"first", "count",
    "offset"}, app/restore/procpool.py) its chunks first..first+count-1."""
    piece = entry.get("piece")
    ids: list[str] = entry["chunks"]
    return ids[piece["first"] : piece["first"] + piece["count"]] if piece else ids


def restore_files(
    repo: Repository,
    tree: TargetTree,
    entries: list[dict[str, Any]],
    where: Mapping[str, Located],
    progress: Callable[[int], None],
    keep_partial: bool,
    threads: int,
) -> None:
    """Write the files `entries` into `tree` (their directories exist), reading each pack they need
    on `threads` threads (1: in this thread, in pack order); on failure, remove the partial files
    (unless `keep_partial`) and raise the first error (never a CancelledError of the packs not yet
    started)."""
    files: list[_FileState] = []
    # per pack: (offset in the pack, sealed length, plain length, chunk id, offset in the file, file)
    by_pack: dict[str, list[tuple[int, int, int, str, int, _FileState]]] = defaultdict(list)
    for e in entries:
        piece = e.get("piece")
        ids = chunks_of(e)
        state = _FileState(safe_relpath(e["path"]), e, len(ids), piece=piece is not None)
        files.append(state)
        offset = piece["offset"] if piece else 0
        for cid in ids:
            pack_id, pack_offset, length, raw_length = where[cid]
            by_pack[pack_id].append((pack_offset, length, raw_length, cid, offset, state))
            offset += raw_length

    def restore_pack(pack_id: str) -> None:
        open_chunk = ChunkOpener(repo).open  # this thread's
        items = sorted(by_pack[pack_id], key=_first)
        for start, end, group in coalesce(items, _span, gap=COALESCE_GAP, limit=MAX_READ):
            data = memoryview(repo.read_blob(pack_id, start, end - start))
            run: list[bytes | memoryview] = []  # chunks that follow one another in one file, written at once
            run_state: _FileState | None = None
            run_start = run_end = run_bytes = 0
            last_cid = ""
            plain: bytes | memoryview = b""
            for pack_offset, length, raw_length, cid, file_offset, state in group:
                if cid != last_cid:  # a chunk met twice in a row (zero pages) is opened once
                    blob = data[pack_offset - start : pack_offset - start + length]
                    try:
                        plain = open_chunk(cid, blob, raw_length)
                    except IntegrityError as exc:
                        if run:  # what was opened before it is written (--keep-partial keeps it)
                            assert run_state is not None
                            _write_run(tree, run_state, run, run_start, run_bytes, progress)
                        raise IntegrityError(
                            f"cannot restore {state.entry['path']}: chunk {cid} in pack {pack_id} is corrupt",
                            detail=exc.message,
                            hint="restore the pack from a replica (secondary region)",
                        ) from None
                    last_cid = cid
                if run and (
                    state is not run_state
                    or file_offset != run_end
                    or len(run) >= WRITE_PARTS
                    or run_bytes >= WRITE_BYTES
                ):
                    assert run_state is not None
                    _write_run(tree, run_state, run, run_start, run_bytes, progress)
                    run = []
                if not run:
                    run_state, run_start, run_end, run_bytes = state, file_offset, file_offset, 0
                run.append(plain)
                run_end += len(plain)
                run_bytes += len(plain)
            if run:
                assert run_state is not None
                _write_run(tree, run_state, run, run_start, run_bytes, progress)

    try:
        for state in files:
            if state.remaining == 0:  # empty file
                try:
                    state.finish(tree)
                except OSError as err:
                    fail(tree.root, state.path, err)
        if threads <= 1:
            for pack_id in by_pack:
                restore_pack(pack_id)
            return
        with ThreadPoolExecutor(threads, thread_name_prefix="restore") as pool:
            futures = [pool.submit(restore_pack, pid) for pid in by_pack]
            first_error: BaseException | None = None
            for future in futures:
                if future.cancelled():  # after a failure: never started
                    continue
                error = future.exception()
                if error is not None and first_error is None:
                    first_error = error
                    for other in futures:
                        other.cancel()
            if first_error is not None:
                raise first_error
    except BaseException:
        if not keep_partial:
            for state in files:
                state.discard(tree)
        raise


#: A run of chunks handed to `write_parts` at once (which writes it in calls of WRITE_CALL_BYTES): at
#: most this many chunks and about this many bytes.
WRITE_PARTS = 256
WRITE_BYTES = 8 << 20


def _first(item: tuple[int, int, int, str, int, _FileState]) -> int:
    return item[0]


def _span(item: tuple[int, int, int, str, int, _FileState]) -> tuple[int, int]:
    return item[0], item[1]


def _write_run(
    tree: TargetTree,
    state: _FileState,
    run: list[bytes | memoryview],
    offset: int,
    nbytes: int,
    progress: Callable[[int], None],
) -> None:
    """Write `run` (`nbytes` in all) at `offset` of `state`'s file, finishing the file if it was its last."""
    try:
        if state.whole:
            state.write_whole(tree, run[0])
        elif state.write(tree, run, offset):
            state.finish(tree)
    except OSError as exc:
        fail(tree.root, state.path, exc)
    progress(nbytes)


#: The most one write system call hands the kernel. The page cache keeps a file in folios as large as
#: the writes that filled it (this kernel: up to a few MiB), and a later small write into a large folio
#: costs the kernel a walk of the whole folio (`ext4_block_write_begin`): PostgreSQL's 8 KiB page writes
#: into a data directory restored in 8 MiB calls took 58 % of its recovery's startup process. Measured
#: here, 30,000 random 8 KiB writes into a 512 MiB file: 0.39-0.42 s of system time after it was written
#: in 1 MiB calls, 0.14-0.16 s after 64 KiB calls, while writing it cost the same 0.11-0.12 s either way.
WRITE_CALL_BYTES = 64 << 10


def write_parts(fd: int, parts: Sequence[bytes | memoryview], offset: int) -> None:
    """Write `parts` one after another from `offset` of `fd`, in calls of at most WRITE_CALL_BYTES
    (pwritev of several parts where they fit), each continued after a short write."""
    batch: list[bytes | memoryview] = []
    batch_bytes = 0
    for part in parts:
        if len(part) <= WRITE_CALL_BYTES:
            pieces: Sequence[bytes | memoryview] = (part,)
        else:
            view = memoryview(part)
            pieces = [
                view[start : start + WRITE_CALL_BYTES] for start in range(0, len(view), WRITE_CALL_BYTES)
            ]
        for piece in pieces:
            if batch and batch_bytes + len(piece) > WRITE_CALL_BYTES:
                _write_call(fd, batch, offset, batch_bytes)
                offset += batch_bytes
                batch, batch_bytes = [], 0
            batch.append(piece)
            batch_bytes += len(piece)
    if batch:
        _write_call(fd, batch, offset, batch_bytes)


def _write_call(fd: int, batch: list[bytes | memoryview], offset: int, nbytes: int) -> None:
    """One pwrite (pwritev for several parts) of `batch`; the rest after a short write (rare: a signal,
    a full disk on its way)."""
    written = os.pwrite(fd, batch[0], offset) if len(batch) == 1 else os.pwritev(fd, batch, offset)
    if written < nbytes:
        rest = memoryview(b"".join(batch))[written:]
        offset += written
        while rest:
            written = os.pwrite(fd, rest, offset)
            rest, offset = rest[written:], offset + written


def finish_big_file(tree: TargetTree, entry: dict[str, Any]) -> None:
    """Give a file restored in pieces its metadata and rename it into place."""
    rel = safe_relpath(entry["path"])
    parent, name = split(rel)
    with tree.dir(parent) as dir_fd:
        try:
            fd = os.open(entry["partial"], os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                metadata.apply_to_fd(fd, entry)
            finally:
                os.close(fd)
        except OSError as exc:
            fail(tree.root, rel, exc)
        tree.move_into_place(dir_fd, entry["partial"], name, rel)
