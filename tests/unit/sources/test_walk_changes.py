"""The walk of a file tree under changes: a directory swapped for a symlink (or another directory)
between being listed and being entered is named as an error, and nothing outside the source is
listed (app/sources/files.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from app.sources.files import Entry, walk_tree
from app.sources.watch import SizeWatch


class SwapOnSight(SizeWatch):
    """Told of each entry as the walk finds it: swaps directory `name` for a symlink to `outside`
    right after the walk listed it, before it enters it."""

    def __init__(self, src: Path, name: str, outside: Path) -> None:
        super().__init__(1 << 60, lambda: None)
        self.counts = lambda entry: True
        self.src, self.name, self.outside = src, name, outside

    def add(self, entry: Entry) -> None:
        if entry.path == self.name:
            shutil.rmtree(self.src / self.name)
            os.symlink(self.outside, self.src / self.name)


def test_a_directory_swapped_for_a_symlink_during_the_walk_is_not_followed(tmp_path: Path) -> None:
    src, outside = tmp_path / "src", tmp_path / "outside"
    (src / "a").mkdir(parents=True)
    (src / "a" / "inside.txt").write_text("inside")
    (src / "z.txt").write_text("z")
    outside.mkdir()
    (outside / "secret.txt").write_text("outside the source")
    (outside / "deeper").mkdir()

    walk = walk_tree(src, SwapOnSight(src, "a", outside))

    paths = [e.path for e in walk.entries]
    assert paths == [".", "a", "z.txt"]  # nothing listed below the swapped directory, inside or out
    assert walk.errors == [
        {"path": "a", "error": "replaced during the walk (not a directory now); not followed"}
    ]


def test_an_unchanged_tree_walks_as_before(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f.txt").write_text("f")
    os.symlink("a/b/f.txt", src / "link")
    walk = walk_tree(src)
    assert [(e.path, e.type) for e in walk.entries] == [
        (".", "dir"),
        ("a", "dir"),
        ("a/b", "dir"),
        ("a/b/f.txt", "file"),
        ("link", "symlink"),
    ]
    assert next(e for e in walk.entries if e.type == "symlink").target == "a/b/f.txt"
    assert walk.errors == []
