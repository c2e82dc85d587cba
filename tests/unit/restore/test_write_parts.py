"""Chunks that follow one another in a file are written with one pwritev (app/restore/files.py)."""

from __future__ import annotations

import os
from pathlib import Path

from app.restore.files import write_parts


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
