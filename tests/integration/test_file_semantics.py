"""Hard links, sparse files, FIFOs, device nodes and the target root's own metadata, backed up and
restored end to end (docs/FORMAT.md section 6)."""

from __future__ import annotations

import hashlib
import os
import socket
import stat
import time
from pathlib import Path

import pytest

from app.backup.plan import GRANULARITY_NS
from app.restore import nodes
from app.system import BackupSystem
from tests.support.trees import OLD_MTIME_NS, age_tree

ROOT_MTIME_NS = 1_650_000_000_123_456_789


def _linked_tree(root: Path) -> Path:
    """`a.txt` linked as `sub/b.txt` and `sub/c.txt`, a pair `d1`/`d2`, and a plain file."""
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"shared content " * 1000)
    os.link(root / "a.txt", root / "sub" / "b.txt")
    os.link(root / "a.txt", root / "sub" / "c.txt")
    (root / "d1").write_bytes(os.urandom(300_000))
    os.link(root / "d1", root / "sub" / "d2")
    (root / "plain.txt").write_text("alone")
    age_tree(root)
    return root


def test_hard_links_come_back_as_links(system: BackupSystem, tmp_path: Path) -> None:
    src = _linked_tree(tmp_path / "src")
    system.add_source("docs", src)
    time.sleep(GRANULARITY_NS / 1e9 + 0.1)  # ctime cannot be set back: let it age past the change rule
    full = system.create_full_backup("docs")
    assert full.state == "complete"
    assert full.stats["files"] == 3  # a.txt, d1, plain.txt: each content once
    inc = system.create_incremental_backup("docs")  # the unchanged re-backup reuses the parent's entries
    assert inc.stats["files_read"] == 0
    for backup in (full, inc):
        out = tmp_path / f"out-{backup.id}"
        plan = system.restore(backup.id, out)
        assert plan.files == 3 and plan.hardlinks == 3
        group = [out / "a.txt", out / "sub" / "b.txt", out / "sub" / "c.txt"]
        assert {p.stat().st_ino for p in group} == {group[0].stat().st_ino}
        assert group[0].stat().st_nlink == 3
        assert all(p.read_bytes() == (src / "a.txt").read_bytes() for p in group)
        assert (out / "d1").stat().st_ino == (out / "sub" / "d2").stat().st_ino
        assert (out / "sub" / "d2").read_bytes() == (src / "d1").read_bytes()
        assert (out / "plain.txt").stat().st_nlink == 1
        assert (out / "sub" / "b.txt").stat().st_mtime_ns == OLD_MTIME_NS


def test_a_subset_without_the_linked_file_gets_its_content(system: BackupSystem, tmp_path: Path) -> None:
    src = _linked_tree(tmp_path / "src")
    system.add_source("docs", src)
    result = system.create_full_backup("docs")
    out = tmp_path / "out"
    system.restore(result.id, out, paths=["sub"])
    assert not (out / "a.txt").exists() and not (out / "d1").exists()
    b, c, d2 = out / "sub" / "b.txt", out / "sub" / "c.txt", out / "sub" / "d2"
    assert b.read_bytes() == c.read_bytes() == (src / "a.txt").read_bytes()
    assert b.stat().st_ino == c.stat().st_ino and b.stat().st_nlink == 2
    assert d2.read_bytes() == (src / "d1").read_bytes() and d2.stat().st_nlink == 1


def _digest(path: Path) -> str:
    h = hashlib.blake2b()
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def test_a_sparse_file_comes_back_sparse(system: BackupSystem, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sparse = src / "disk.img"
    with open(sparse, "wb") as handle:
        handle.truncate(256 << 20)
        for offset in (0, 5_000_001, 100 << 20, (256 << 20) - 3):
            handle.seek(offset)
            handle.write(b"abc")
    (src / "zeros.bin").write_bytes(bytes(1 << 20))  # written zeros: allocated on purpose, stays so
    system.add_source("disk", src)
    result = system.create_full_backup("disk")
    out = tmp_path / "out"
    system.restore(result.id, out)
    restored = out / "disk.img"
    assert restored.stat().st_size == 256 << 20
    assert restored.stat().st_blocks * 512 <= 1 << 20, f"{restored.stat().st_blocks * 512} bytes allocated"
    assert _digest(restored) == _digest(sparse)
    assert (out / "zeros.bin").stat().st_blocks * 512 >= 1 << 20
    assert (out / "zeros.bin").read_bytes() == bytes(1 << 20)


def test_fifos_and_device_nodes_come_back_and_sockets_are_named(system: BackupSystem, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a device node in the source needs root")
    src = tmp_path / "src"
    (src / "dev").mkdir(parents=True)
    os.mkfifo(src / "dev" / "pipe", 0o640)
    os.mknod(src / "dev" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(src / "dev" / "loop", stat.S_IFBLK | 0o660, os.makedev(7, 200))
    os.chmod(src / "dev" / "loop", 0o660)  # past the umask
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(src / "dev" / "sock"))
    try:
        age_tree(src)
        system.add_source("devs", src)
        result = system.create_full_backup("devs")
    finally:
        listener.close()
    assert result.state == "complete"
    assert [w["path"] for w in result.warnings] == ["dev/sock"]
    out = tmp_path / "out"
    plan = system.restore(result.id, out)
    assert plan.specials == 3 and plan.warnings == []
    pipe, null, loop = (os.lstat(out / "dev" / name) for name in ("pipe", "null", "loop"))
    assert stat.S_ISFIFO(pipe.st_mode) and stat.S_IMODE(pipe.st_mode) == 0o640
    assert stat.S_ISCHR(null.st_mode) and (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_ISBLK(loop.st_mode) and (os.major(loop.st_rdev), os.minor(loop.st_rdev)) == (7, 200)
    assert stat.S_IMODE(loop.st_mode) == 0o660 and loop.st_mtime_ns == OLD_MTIME_NS
    assert not (out / "dev" / "sock").exists()


def test_device_nodes_without_root_are_named_in_the_warnings(
    system: BackupSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a device node in the source needs root")
    src = tmp_path / "src"
    src.mkdir()
    os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(src / "pipe")
    system.add_source("devs", src)
    result = system.create_full_backup("devs")
    monkeypatch.setattr(nodes, "_IS_ROOT", False)  # the restore runs as if it were not root
    plan = system.restore(result.id, tmp_path / "out")
    assert [w["path"] for w in plan.warnings] == ["null"]
    assert "needs root" in plan.warnings[0]["warning"]
    assert not (tmp_path / "out" / "null").exists()
    assert stat.S_ISFIFO(os.lstat(tmp_path / "out" / "pipe").st_mode)


def test_the_target_root_gets_the_source_roots_mode_and_mtime(system: BackupSystem, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "f.txt").write_text("x")
    os.chmod(src, 0o705)
    os.utime(src, ns=(ROOT_MTIME_NS, ROOT_MTIME_NS))
    system.add_source("docs", src)
    result = system.create_full_backup("docs")
    for out, paths in ((tmp_path / "out", None), (tmp_path / "part", ["d"])):
        system.restore(result.id, out, paths=paths)
        st = out.stat()
        assert stat.S_IMODE(st.st_mode) == 0o705
        assert st.st_mtime_ns == ROOT_MTIME_NS


def test_links_and_fifos_replace_a_symlink_in_the_target_never_follow_it(
    system: BackupSystem, tmp_path: Path
) -> None:
    src = _linked_tree(tmp_path / "src")
    os.mkfifo(src / "sub" / "pipe")
    system.add_source("docs", src)
    result = system.create_full_backup("docs")
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    for name in ("b.txt", "pipe"):
        os.symlink(victim, out / "sub" / name)
    system.restore(result.id, out, overwrite=True)
    assert victim.read_text() == "keep me" and victim.stat().st_nlink == 1
    assert (out / "sub" / "b.txt").stat().st_ino == (out / "a.txt").stat().st_ino
    assert stat.S_ISFIFO(os.lstat(out / "sub" / "pipe").st_mode)


def test_xattrs_of_an_unchanged_file_carry_over_and_a_changed_xattr_is_read_again(
    system: BackupSystem, tmp_path: Path
) -> None:
    """An unchanged re-backup takes a file's xattrs from its parent's entry instead of asking the file
    (app/sources/files.py); setting an xattr changes the file's ctime, so that file is read again and its
    new xattrs recorded."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("kept.txt", "tagged.txt", "plain.txt"):
        (src / name).write_text(name * 100)
    os.setxattr(src / "kept.txt", "user.origin", b"scanner-7")
    os.setxattr(src / "tagged.txt", "user.origin", b"scanner-1")
    age_tree(src)
    system.add_source("docs", src)
    time.sleep(GRANULARITY_NS / 1e9 + 0.1)  # ctime cannot be set back: let it age past the change rule
    system.create_full_backup("docs")
    unchanged = system.create_incremental_backup("docs")
    assert unchanged.stats["files_read"] == 0
    os.setxattr(src / "tagged.txt", "user.origin", b"scanner-2")  # the content and mtime stay
    os.setxattr(src / "plain.txt", "user.new", b"x")
    changed = system.create_incremental_backup("docs")
    assert changed.stats["files_read"] == 2
    for backup, tagged in ((unchanged, b"scanner-1"), (changed, b"scanner-2")):
        out = tmp_path / f"out-{backup.id}"
        system.restore(backup.id, out)
        assert os.getxattr(out / "kept.txt", "user.origin") == b"scanner-7"
        assert os.getxattr(out / "tagged.txt", "user.origin") == tagged
        assert os.listxattr(out / "plain.txt") == ([] if backup is unchanged else ["user.new"])
