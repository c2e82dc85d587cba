"""A manifest entry's JSON keeps its keys in one order: a manifest's bytes, so its chunks' ids and
their dedup from backup to backup, depend on it (docs/FORMAT.md section 6)."""

from __future__ import annotations

from app.sources.files import Entry


def test_each_kind_of_entry_keeps_its_keys_in_order() -> None:
    file = Entry("a", "file", 0o644, 1, 2, 3, size=5, ctime_ns=4, inode=6, chunks=["c1"])
    assert list(file.to_json()) == [
        "path", "type", "mode", "uid", "gid", "mtime_ns", "size", "ctime_ns", "inode", "chunks",
    ]  # fmt: skip
    sparse = Entry("b", "file", 0o600, 0, 0, 1, size=9, sparse=True, xattrs={"user.k": "dg=="})
    assert list(sparse.to_json())[-3:] == ["chunks", "sparse", "xattrs"]
    link = Entry("c", "symlink", 0o777, 0, 0, 1, target="a")
    assert list(link.to_json()) == ["path", "type", "mode", "uid", "gid", "mtime_ns", "target"]
    node = Entry("d", "chardev", 0o600, 0, 0, 1, rdev=[1, 3])
    assert node.to_json() == {
        "path": "d", "type": "chardev", "mode": 0o600, "uid": 0, "gid": 0, "mtime_ns": 1, "rdev": [1, 3],
    }  # fmt: skip


def test_a_file_round_trips() -> None:
    file = Entry("a", "file", 0o644, 1, 2, 3, size=5, ctime_ns=4, inode=6, chunks=["c1", "c2"], sparse=True)
    again = Entry.from_json(file.to_json())
    assert again.to_json() == file.to_json()
