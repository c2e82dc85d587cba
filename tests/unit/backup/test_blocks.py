"""Block-aligned chunks of PostgreSQL relation files (app/backup/blocks.py, docs/FORMAT.md section 4):
which paths, where the cuts fall (whole file, streamed, in pieces), and that a page changed in place
stores one group while the rest of the file is found in the repository."""

from __future__ import annotations

import io
import os
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.backup import known
from app.backup.blocks import PAGE_SIZE, BlockChunker, BlockRule, ChunkerChoice
from app.backup.known import KnownChunks, catalog_lookup
from app.backup.plan import PIECE_BYTES, items_of
from app.backup.reader import read_file
from app.backup.unit import pack_recorder
from app.backup.writer import ChunkWriter
from app.catalog import chunks
from app.context import Context
from app.repo.format import Kind
from app.sources.confined import SourceRoot
from app.sources.files import Entry
from app.sources.postgres import RELATION_PATHS
from app.system import BackupSystem
from tests.support.system import settings_for

GROUP = 4 * PAGE_SIZE


@pytest.mark.parametrize(
    ("path", "relation"),
    [
        ("base/5/16384", True),
        ("base/5/16384.3", True),
        ("base/5/16384_fsm", True),
        ("base/5/16384_vm.1", True),
        ("global/1262", True),
        ("pg_tblspc/16390/PG_15_202209061/5/16391", True),
        ("global/pg_control", False),
        ("base/5/PG_VERSION", False),
        ("base/5/pg_filenode.map", False),
        ("pg_xact/0000", False),
        ("pg_multixact/offsets/0000", False),
        ("base/5/16384.tmp", False),
        ("pg_tblspc/16390/PG_15_202209061/5/pg_filenode.map", False),
    ],
)
def test_relation_files_are_named_by_their_path(path: str, relation: bool) -> None:
    assert bool(re.search(RELATION_PATHS, path)) is relation


def test_cuts_fall_at_every_group_in_memory_and_streamed() -> None:
    data = random.Random(1).randbytes(5 * GROUP + 100)
    chunker = BlockChunker(GROUP)
    cut = [bytes(c) for c in chunker.cut(data)]
    assert [len(c) for c in cut] == [GROUP] * 5 + [100]
    assert b"".join(cut) == data

    class Trickle(io.RawIOBase):  # short reads, as a pipe or a busy disk may give
        def __init__(self) -> None:
            self.at = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            n = min(len(buffer), 3000, len(data) - self.at)
            buffer[:n] = data[self.at : self.at + n]
            self.at += n
            return n

    assert [bytes(c.data) for c in chunker.stream(Trickle())] == cut
    # A big file's pieces start at multiples of every group size: its groups are the whole file's.
    assert PIECE_BYTES % GROUP == 0
    with pytest.raises(ValueError, match="multiple of 8192"):
        BlockRule(10000, RELATION_PATHS)


def test_only_the_rule_s_paths_get_the_block_chunker() -> None:
    choice = ChunkerChoice(BlockRule(GROUP, RELATION_PATHS))
    default = object()
    assert isinstance(choice.for_path("base/5/16384", default), BlockChunker)
    assert choice.for_path("global/pg_control", default) is default
    assert ChunkerChoice(None).for_path("base/5/16384", default) is default
    assert BlockRule.from_json(BlockRule(GROUP, "x").to_json()) == BlockRule(GROUP, "x")
    assert BlockRule.from_json(None) is None


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    system = BackupSystem(settings_for(tmp_path / "home", catalog=None), actor="test")
    system.init()
    try:
        yield system.context
    finally:
        known.forget()
        system.close()


def _read_chunk(ctx: Context, chunk_id: str) -> bytes:
    with ctx.sessions() as session:
        loc = chunks.locate(session, [chunk_id])[chunk_id]
    blob = ctx.storage.get(Kind.PACKS, loc.pack_id, loc.offset, loc.length)
    return ctx.repository.open_chunk(chunk_id, blob, raw_length=loc.raw_length)


def _store(ctx: Context, root: Path, name: str, chunker: object, piece: tuple[int, int | None] | None = None
           ) -> tuple[list[str], int]:
    st = os.stat(root / name)
    entry = Entry(path=name, type="file", mode=0o600, uid=0, gid=0, mtime_ns=st.st_mtime_ns, size=st.st_size)
    writer = ChunkWriter(ctx.repository, KnownChunks(catalog_lookup(ctx)), pack_recorder(ctx, "b-test"), level=3)
    try:
        read = read_file(SourceRoot(str(root)), entry, chunker, writer, lambda _n: None, attempts=1,  # type: ignore[arg-type]
                         piece=piece)
        writer.flush()
    finally:
        writer.close()
    return read.chunks, read.bytes_new


def test_a_page_changed_in_place_stores_one_group_and_the_file_reads_back_whole(
    ctx: Context, tmp_path: Path
) -> None:
    root = tmp_path / "pgdata"
    root.mkdir()
    rel = root / "16384"
    pages = random.Random(2).randbytes(600 * PAGE_SIZE)  # 4.7 MiB: read whole, not streamed
    rel.write_bytes(pages)
    blocks = BlockChunker(GROUP)
    first, new = _store(ctx, root, "16384", blocks)
    assert new == len(pages) and len(first) == 600 // 4
    with open(rel, "r+b") as handle:  # PostgreSQL writes one page
        handle.seek(333 * PAGE_SIZE)
        handle.write(b"\x01" * PAGE_SIZE)
    second, new = _store(ctx, root, "16384", blocks)
    assert new == GROUP  # the group holding page 333, nothing else
    assert [i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b] == [333 // 4]
    restored = b"".join(_read_chunk(ctx, c) for c in second)
    assert restored == rel.read_bytes()
    # The same file chunked by FastCDC stores a whole content-defined chunk (256 KiB or more) again.
    with open(rel, "r+b") as handle:
        handle.seek(100 * PAGE_SIZE)
        handle.write(b"\x02" * PAGE_SIZE)
    _store(ctx, root, "16384", ctx.repository.new_chunker())
    with open(rel, "r+b") as handle:
        handle.seek(500 * PAGE_SIZE)
        handle.write(b"\x03" * PAGE_SIZE)
    _, cdc_new = _store(ctx, root, "16384", ctx.repository.new_chunker())
    assert cdc_new >= 256 * 1024


def test_a_piece_of_a_big_relation_file_cuts_the_groups_of_the_whole_file(ctx: Context, tmp_path: Path) -> None:
    root = tmp_path / "pgdata"
    root.mkdir()
    data = random.Random(3).randbytes(2 * PIECE_BYTES // 8 + 5 * PAGE_SIZE)
    (root / "16384.1").write_bytes(data)
    blocks = BlockChunker(GROUP)
    whole, _ = _store(ctx, root, "16384.1", blocks)
    entry = Entry(path="16384.1", type="file", mode=0o600, uid=0, gid=0, mtime_ns=0, size=len(data))
    in_pieces = [
        c
        for item in items_of(entry, PIECE_BYTES // 8)
        for c in _store(ctx, root, "16384.1", blocks, (item.offset, item.length))[0]
    ]
    assert in_pieces == whole


def test_a_run_of_groups_stores_each_new_group_once_and_each_reads_back(ctx: Context) -> None:
    rng = random.Random(4)
    noise, other = rng.randbytes(GROUP), rng.randbytes(GROUP)
    text = b"".join(b"row %08d of a table, padded out like a heap tuple;" % i for i in range(700))[:GROUP]
    # zeros repeated, random pages (stored raw), a compressible group after a random one (a fast
    # zstd level follows a group that hardly compressed), a repeat, and a short last group
    groups = [bytes(GROUP), bytes(GROUP), noise, text, other, noise, bytes(GROUP), text[:5000]]
    data = memoryview(b"".join(groups))
    writer = ChunkWriter(ctx.repository, KnownChunks(catalog_lookup(ctx)), pack_recorder(ctx, "b-test"), level=3)
    try:
        ids, new = writer.store_blocks(data, GROUP)
        writer.flush()
        assert ids == [ctx.repository.chunk_ids.of(g) for g in groups]
        unique = {ctx.repository.chunk_ids.of(g): len(g) for g in groups}
        assert new == sum(unique.values()) and writer.stats.new_chunks == len(unique)
        again, new_again = writer.store_blocks(data, GROUP)  # the index holds every group now
        assert again == ids and new_again == 0 and writer.stats.new_chunks == len(unique)
    finally:
        writer.close()
    assert [_read_chunk(ctx, chunk_id) for chunk_id in ids] == groups
