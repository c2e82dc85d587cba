"""Opening a source's files without leaving it (app/sources/confined.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from app.sources.confined import REPLACED, VANISHED, ChangedUnderWalk, SourceRoot


def _read(root: SourceRoot, rel: str) -> bytes:
    fd, _st = root.open_file(rel)
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    src, outside = tmp_path / "src", tmp_path / "outside"
    (src / "a").mkdir(parents=True)
    (src / "a" / "one.txt").write_bytes(b"one")
    (src / "a" / "two.txt").write_bytes(b"two")
    outside.mkdir()
    (outside / "two.txt").write_bytes(b"outside")
    return src, outside


def test_a_directory_swapped_after_it_was_opened_is_not_followed(tmp_path: Path) -> None:
    src, outside = _tree(tmp_path)
    root = SourceRoot(str(src))
    assert _read(root, "a/one.txt") == b"one"  # `a` is now kept open
    shutil.rmtree(src / "a")
    os.symlink(outside, src / "a")
    with pytest.raises(ChangedUnderWalk) as caught:
        _read(root, "a/two.txt")
    assert caught.value.code == VANISHED  # the directory the walk saw is gone; the link is not taken
    with pytest.raises(ChangedUnderWalk) as fresh:
        _read(SourceRoot(str(src)), "a/two.txt")
    assert fresh.value.code == REPLACED and "symbolic link" in fresh.value.reason


def test_special_files_and_links_are_never_opened(tmp_path: Path) -> None:
    src, outside = _tree(tmp_path)
    os.mkfifo(src / "pipe")
    os.symlink(outside / "two.txt", src / "link")
    root = SourceRoot(str(src))
    for rel, word in (("pipe", "FIFO"), ("link", "symbolic link"), ("a", "directory")):
        with pytest.raises(ChangedUnderWalk) as caught:
            root.open_file(rel)
        assert caught.value.code == REPLACED and word in caught.value.reason
    with pytest.raises(ValueError):
        root.open_file("a/../../outside/two.txt")


def test_links_the_source_names_are_followed(tmp_path: Path) -> None:
    src, outside = _tree(tmp_path)
    (src / "pg_tblspc").mkdir()
    os.symlink(outside, src / "pg_tblspc" / "16384")
    assert _read(SourceRoot(str(src), ["pg_tblspc/16384"]), "pg_tblspc/16384/two.txt") == b"outside"
    with pytest.raises(ChangedUnderWalk):
        _read(SourceRoot(str(src)), "pg_tblspc/16384/two.txt")
