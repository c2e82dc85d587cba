"""Chunks that follow one another in a file are written with few system calls, none of more than
WRITE_CALL_BYTES (app/restore/files.py: large writes leave the file in large page-cache folios, which
make every later small write into it expensive)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.restore import files
from app.restore.files import WRITE_CALL_BYTES, write_parts


def test_parts_land_one_after_another_at_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "f"
    parts = [bytes([n]) * (1000 + n) for n in range(1, 6)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, 10 + sum(len(p) for p in parts))
        write_parts(fd, parts, 10)
        write_parts(fd, [memoryview(b"head")], 0)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"head" + bytes(6) + b"".join(parts)


def test_no_call_writes_more_than_the_cap_and_the_bytes_land_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a restore hands over: 32 KiB block groups of a relation file (a run of 8 MiB), a 1 MiB chunk,
    # odd sizes around the cap.
    parts = [os.urandom(32 << 10) for _ in range(256)] + [
        os.urandom(1 << 20),
        os.urandom(WRITE_CALL_BYTES + 1),
    ]
    parts += [os.urandom(n) for n in (1, WRITE_CALL_BYTES - 1, WRITE_CALL_BYTES, 7)]
    calls: list[int] = []
    real_pwrite, real_pwritev = os.pwrite, os.pwritev

    def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
        calls.append(len(data))
        return real_pwrite(fd, data, offset)

    def pwritev(fd: int, buffers: list[bytes | memoryview], offset: int) -> int:
        calls.append(sum(len(b) for b in buffers))
        return real_pwritev(fd, buffers, offset)

    monkeypatch.setattr(files.os, "pwrite", pwrite)
    monkeypatch.setattr(files.os, "pwritev", pwritev)
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        write_parts(fd, parts, 4096)
    finally:
        os.close(fd)
    total = sum(len(p) for p in parts)
    assert path.read_bytes() == bytes(4096) + b"".join(parts)
    assert max(calls) <= WRITE_CALL_BYTES
    assert sum(calls) == total
    assert len(calls) <= total // WRITE_CALL_BYTES + 8  # parts that fit share a call
