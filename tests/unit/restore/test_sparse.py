"""Zero blocks written as holes: the content is the same, the zero blocks take no space."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from app.restore.sparse import SPARSE_BLOCK, write_sparse


def _write(path: Path, size: int, pieces: list[tuple[int, bytes]]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
        for offset, data in pieces:
            write_sparse(fd, data, offset)
    finally:
        os.close(fd)


def _data_regions(path: Path) -> list[tuple[int, int]]:
    """(start, end) of each data region, by SEEK_DATA/SEEK_HOLE."""
    regions = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size, position = os.fstat(fd).st_size, 0
        while position < size:
            try:
                start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            regions.append((start, end))
            position = end
    finally:
        os.close(fd)
    return regions


@pytest.mark.parametrize("offset", [0, 1, SPARSE_BLOCK - 7, 3 * SPARSE_BLOCK])
def test_content_is_kept_and_zero_blocks_are_holes(tmp_path: Path, offset: int) -> None:
    rng = random.Random(offset)
    zeros = bytes(64 * SPARSE_BLOCK)
    chunk = (
        rng.randbytes(5000)
        + zeros
        + b"\x00" * 100  # a short zero run: written, not a hole
        + rng.randbytes(3)
        + bytes(SPARSE_BLOCK + 1)  # holds one aligned block at most
        + rng.randbytes(SPARSE_BLOCK)
        + zeros  # runs to the end of the chunk
    )
    size = offset + len(chunk)
    path = tmp_path / "f"
    _write(path, size, [(offset, chunk)])
    assert path.read_bytes() == bytes(offset) + chunk
    allocated = sum(end - start for start, end in _data_regions(path))
    assert allocated <= size - 100 * SPARSE_BLOCK


def test_data_without_zero_blocks_is_written_whole(tmp_path: Path) -> None:
    data = os.urandom(3 * SPARSE_BLOCK + 11)
    path = tmp_path / "f"
    _write(path, len(data), [(0, data), (len(data), b"")])
    assert path.read_bytes() == data
    assert _data_regions(path) == [(0, len(data))]


def test_an_all_zero_file_allocates_nothing(tmp_path: Path) -> None:
    size = 1 << 22
    path = tmp_path / "f"
    _write(path, size, [(0, bytes(size // 2)), (size // 2, memoryview(bytes(size // 2)))])
    assert path.stat().st_size == size and path.stat().st_blocks == 0
    assert path.read_bytes() == bytes(size)
