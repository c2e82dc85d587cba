"""The walk's entries for the root, hard links and special files, and old entries read as before."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from app.repo.jsondoc import dump_json
from app.sources.files import ROOT_PATH, SOCKET_SKIPPED, Entry, walk_tree


def test_the_walk_records_the_root_hard_links_fifos_and_names_sockets(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "b").mkdir(parents=True)
    (root / "b" / "first").write_text("content")
    os.link(root / "b" / "first", root / "a-second")  # sorted names: met before b/first
    os.link(root / "b" / "first", root / "b" / "third")
    os.mkfifo(root / "pipe")
    with open(root / "sparse.img", "wb") as handle:
        handle.truncate(1 << 20)
        handle.write(b"x")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(root / "sock"))
    try:
        walk = walk_tree(root)
    finally:
        listener.close()
    by_path = {e.path: e for e in walk.entries}
    assert walk.entries[0].path == ROOT_PATH and walk.entries[0].type == "dir"
    assert by_path["a-second"].type == "file"  # the first name the walk meets holds the content
    assert by_path["b/first"].type == by_path["b/third"].type == "hardlink"
    assert by_path["b/first"].target == by_path["b/third"].target == "a-second"
    assert by_path["b/first"].chunks == [] and by_path["b/first"].size == 0
    assert by_path["pipe"].type == "fifo" and by_path["pipe"].rdev is None
    assert "sock" not in by_path
    assert by_path["sparse.img"].sparse and by_path["sparse.img"].to_json()["sparse"] is True
    assert not by_path["a-second"].sparse and "sparse" not in by_path["a-second"].to_json()
    assert walk.skipped == [{"path": "sock", "reason": SOCKET_SKIPPED}]


def test_an_entry_written_before_the_new_fields_reads_and_writes_the_same() -> None:
    old = (
        '{"path":"a/b.txt","type":"file","mode":420,"uid":0,"gid":0,"mtime_ns":1700000000000000000,'
        '"size":12,"ctime_ns":1700000000000000000,"inode":1234,"chunks":["' + "ab" * 32 + '"]}'
    )
    entry = Entry.from_json(json.loads(old))
    assert entry.rdev is None and entry.target is None
    assert dump_json(entry.to_json()).decode() == old
