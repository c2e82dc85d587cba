"""Hard links whose file is missing: named as errors at backup, refused or given content at restore."""

from __future__ import annotations

from typing import Any

import pytest

from app.backup.links import drop_dangling_links
from app.errors import IntegrityError
from app.restore.nodes import check_links, detach_links


def _file(path: str) -> dict[str, Any]:
    return {"path": path, "type": "file", "mode": 0o644, "mtime_ns": 1, "size": 3, "chunks": ["c"]}


def _link(path: str, target: str) -> dict[str, Any]:
    return {"path": path, "type": "hardlink", "mode": 0o644, "mtime_ns": 1, "target": target}


def test_a_link_to_a_file_that_could_not_be_read_becomes_an_error() -> None:
    errors = [{"path": "gone", "error": "No such file or directory"}]
    entries = [_file("a"), _link("b", "a"), _link("c", "gone")]
    assert drop_dangling_links(entries, errors) == [_file("a"), _link("b", "a")]
    assert errors[1] == {"path": "c", "error": "hard link to gone, which could not be read"}


def test_a_subset_gives_the_content_to_the_first_link_of_a_target_left_out() -> None:
    entries = [_file("a"), _file("x"), _link("s/b", "a"), _link("s/c", "a"), _link("s/y", "x"), _link("t", "x")]
    chosen = [e for e in entries if e["path"].startswith("s/") or e["path"] == "x"]
    result = detach_links(chosen, entries)
    assert result == [_file("x"), {**_file("a"), "path": "s/b"}, _link("s/c", "s/b"), _link("s/y", "x")]
    check_links(result)


def test_a_restore_refuses_a_link_to_what_is_not_a_file() -> None:
    with pytest.raises(IntegrityError, match="hard link to 'd'"):
        check_links([{"path": "d", "type": "dir"}, _link("b", "d")])
