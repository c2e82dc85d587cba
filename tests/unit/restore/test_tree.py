"""The target tree: directories opened by descriptor, no link followed, few descriptors held."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest

from app.errors import RestoreTargetError
from app.restore import tree as tree_module
from app.restore.tree import NAME_MAX, PARTIAL_SUFFIX, TargetTree, partial_name


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_deep_walk_holds_few_descriptors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tree_module, "DIR_CACHE", 4)
    rel = "/".join(f"level{i:03d}" for i in range(200))
    before = _open_fds()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (before + 50, hard))  # fewer than the tree's levels
    try:
        with TargetTree(str(tmp_path)) as tree:
            with tree.dir(rel, create=True) as fd:
                os.close(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
                assert _open_fds() - before <= 4 + 2
            with tree.dir(rel + "/more", create=True):
                pass
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert _open_fds() == before
    assert (tmp_path.joinpath(*rel.split("/")) / "leaf").is_file()


def test_a_link_where_a_directory_is_needed_is_refused_or_replaced(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(outside, target / "docs")
    with (
        TargetTree(str(target)) as tree,
        pytest.raises(RestoreTargetError, match="docs"),
        tree.dir("docs/sub", create=True),
    ):
        pass
    with TargetTree(str(target), replace=True) as tree, tree.dir("docs/sub", create=True):
        pass
    assert not (target / "docs").is_symlink() and (target / "docs" / "sub").is_dir()
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("name", ["a", "b" * 255, "é" * 127, ".hidden"])
def test_partial_names_fit_in_a_name(name: str) -> None:
    made = partial_name(name)
    assert len(os.fsencode(made)) <= NAME_MAX and made.endswith(PARTIAL_SUFFIX) and "/" not in made
    assert made != partial_name(name)
