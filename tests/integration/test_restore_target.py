"""What a restore may do to its target: any name the file system takes, any depth, never through a link
it did not create, and every refusal decided before anything is written (docs/RESTORE.md)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.errors import IntegrityError, ObjectNotFoundError, RestoreTargetError
from app.restore.target import PARTIAL_SUFFIX
from app.system import BackupSystem
from tests.support.trees import age_tree, assert_same_tree, make_tree


def _backed_up(system: BackupSystem, src: Path) -> str:
    system.add_source("docs", src)
    backup = system.create_full_backup("docs")
    assert backup.state == "complete"
    return backup.id


def _snapshot(root: Path) -> dict[str, tuple[int, int, bytes | str | None]]:
    """Every entry under root: (mode, mtime, content or link target)."""
    seen: dict[str, tuple[int, int, bytes | str | None]] = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        body: bytes | str | None = None
        if path.is_symlink():
            body = os.readlink(path)
        elif path.is_file():
            body = path.read_bytes()
        seen[str(path.relative_to(root))] = (st.st_mode, st.st_mtime_ns, body)
    return seen


def test_names_of_243_to_255_bytes_restore(system: BackupSystem, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / ("d" * 255)).mkdir(parents=True)
    for n in (243, 250, 255):
        (src / ("f" * n)).write_bytes(os.urandom(3000 + n))
        (src / ("d" * 255) / ("g" * n)).write_bytes(b"")
    (src / ("é" * 127)).write_text("two-byte letters: 254 bytes")  # a cut must not split a letter
    os.symlink("f" * 255, src / ("l" * 255))
    age_tree(src)
    backup_id = _backed_up(system, src)
    plan = system.restore(backup_id, tmp_path / "out")
    assert plan.files == 7 and plan.symlinks == 1
    assert_same_tree(src, tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*" + PARTIAL_SUFFIX))


def test_restore_past_path_max_goes_by_directory_descriptors(system: BackupSystem, tmp_path: Path) -> None:
    src = tmp_path / "s"
    deep = src
    for i in range(15):  # about 3,800 bytes below the source, 4,500 below the target
        deep = deep / (f"{i:02d}" + "x" * 250)
    os.makedirs(deep)
    (deep / "leaf.txt").write_text("at the bottom")
    age_tree(src)
    backup_id = _backed_up(system, src)
    long_parent = tmp_path / ("t" * 250) / ("u" * 250) / ("v" * 200)
    out = long_parent / "out"
    assert len(os.fsencode(out)) + len(os.fsencode(deep.relative_to(src))) > 4096
    system.restore(backup_id, out)
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in deep.relative_to(src).parts:
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open("leaf.txt", os.O_RDONLY, dir_fd=fd)
        assert os.read(leaf, 100) == b"at the bottom"
        os.close(leaf)
    finally:
        os.close(fd)


def test_overwrite_never_follows_a_link_in_the_target(system: BackupSystem, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    backup_id = _backed_up(system, src)
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "file").write_text("not the restore's to touch")
    os.chmod(outside / "file", 0o640)
    os.chmod(outside / "dir", 0o755)
    before = _snapshot(outside)
    out = tmp_path / "out"
    (out / "bin").mkdir(parents=True)
    os.symlink(outside / "dir", out / "docs")  # a link where the backup has a directory
    os.symlink(outside / "file", out / "bin" / "blob.bin")  # a link where the backup has a file
    os.symlink(outside / "file", out / "ledger-link")  # a link where the backup has a link
    (out / "empty-dir").write_text("a file where the backup has a directory")
    (out / "dangling").mkdir()  # a directory where the backup has a symlink
    (out / "dangling" / "inside").write_text("x")
    with pytest.raises(RestoreTargetError) as caught:
        system.restore(backup_id, out, skip_existing=True)
    assert "docs" in str(caught.value) and "--overwrite" in str(caught.value)
    assert _snapshot(outside) == before and (out / "docs").is_symlink()  # refused before writing
    system.restore(backup_id, out, overwrite=True)
    assert _snapshot(outside) == before
    assert_same_tree(src, out)


def test_skip_existing_restores_only_what_is_missing(system: BackupSystem, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    backup_id = _backed_up(system, src)
    out = tmp_path / "out"
    (out / "docs").mkdir(parents=True)
    (out / "docs" / "ledger.csv").write_text("mine, newer than the backup")
    (out / "keep.txt").write_text("not in the backup")
    with pytest.raises(Exception) as both:
        system.restore(backup_id, out, overwrite=True, skip_existing=True)
    assert getattr(both.value, "exit_code", None) == 2
    dry = system.restore(backup_id, out, skip_existing=True, dry_run=True)
    assert dry.skipped == 2 and dry.files == 6  # docs and docs/ledger.csv are there already
    assert not (out / "bin").exists()
    plan = system.restore(backup_id, out, skip_existing=True)
    assert plan.files == 6
    assert (out / "docs" / "ledger.csv").read_text() == "mine, newer than the backup"
    assert (out / "keep.txt").read_text() == "not in the backup"
    assert (out / "bin" / "blob.bin").read_bytes() == (src / "bin" / "blob.bin").read_bytes()
    assert os.readlink(out / "ledger-link") == "docs/ledger.csv"


def test_a_directory_where_the_backup_has_a_file_is_refused_before_anything_is_written(
    system: BackupSystem, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    backup_id = _backed_up(system, src)
    out = tmp_path / "out"
    (out / "bin" / "blob.bin").mkdir(parents=True)
    (out / "bin" / "blob.bin" / "precious").write_text("x")
    with pytest.raises(RestoreTargetError, match=r"bin/blob\.bin"):
        system.restore(backup_id, out, skip_existing=True)
    with pytest.raises(RestoreTargetError, match=r"bin/blob\.bin"):
        system.restore(backup_id, out, skip_existing=True, dry_run=True)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "bin",
        "bin/blob.bin",
        "bin/blob.bin/precious",
    ]
    system.restore(backup_id, out, overwrite=True)
    assert_same_tree(src, out)


def test_target_inside_a_file_is_a_clear_refusal(system: BackupSystem, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=1)
    backup_id = _backed_up(system, src)
    (tmp_path / "plain").write_text("a file")
    for dry_run in (True, False):
        with pytest.raises(RestoreTargetError, match="plain"):
            system.restore(backup_id, tmp_path / "plain" / "sub" / "out", dry_run=dry_run)
    assert (tmp_path / "plain").read_text() == "a file"


def test_dry_run_refuses_what_the_run_refuses(system: BackupSystem, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=1)
    backup_id = _backed_up(system, src)
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(RestoreTargetError, match="not empty"):
        system.restore(backup_id, out, dry_run=True)


def test_dry_run_checks_every_pack_s_size_and_names_the_files(system: BackupSystem, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=1)
    backup_id = _backed_up(system, src)
    packs = sorted(
        (p for p in (system.settings.home / "repo" / "packs").rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    assert system.restore(backup_id, tmp_path / "fine", dry_run=True).packs == 1
    victim = packs[-1]  # the data: 1 MiB of random bytes and the ledger (the other holds the manifest)
    with open(victim, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(IntegrityError) as caught:
        system.restore(backup_id, tmp_path / "dry", dry_run=True)
    assert victim.name in str(caught.value) and "bin/blob.bin" in str(caught.value)
    assert caught.value.exit_code == 5
    victim.unlink()
    with pytest.raises(ObjectNotFoundError) as missing:
        system.restore(backup_id, tmp_path / "dry", dry_run=True)
    assert victim.name in str(missing.value) and "bin/blob.bin" in str(missing.value)
    assert not (tmp_path / "dry").exists()


def test_hard_links_and_fifos_replace_links_in_the_target(system: BackupSystem, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "data").write_text("content")
    os.link(src / "d" / "data", src / "d" / "alias")
    os.mkfifo(src / "d" / "pipe")
    age_tree(src)
    backup_id = _backed_up(system, src)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("untouched")
    before = _snapshot(outside)
    out = tmp_path / "out"
    (out / "d").mkdir(parents=True)
    os.symlink(outside / "victim", out / "d" / "alias")
    os.symlink(outside / "victim", out / "d" / "pipe")
    system.restore(backup_id, out, overwrite=True)
    assert _snapshot(outside) == before
    assert os.stat(out / "d" / "alias").st_ino == os.stat(out / "d" / "data").st_ino
    assert not (out / "d" / "pipe").is_symlink() and (out / "d" / "pipe").is_fifo()


def test_a_small_file_left_half_written_at_its_name_by_a_killed_restore_is_replaced_by_the_rerun(
    system: BackupSystem, tmp_path: Path
) -> None:
    # A one-chunk file of a restore into an empty target is created at its own name (docs/RESTORE.md
    # section 3): what a restore killed while writing it leaves, the same restore run again replaces.
    from app.restore.target import UNFINISHED_MARKER, mark_unfinished, restore_identity

    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    age_tree(src)
    backup_id = _backed_up(system, src)
    out = tmp_path / "out"
    small = next(p for p in sorted(src.rglob("*")) if p.is_file() and not p.is_symlink() and p.stat().st_size)
    left = out / small.relative_to(src)
    left.parent.mkdir(parents=True)
    mark_unfinished(out, restore_identity(backup_id, None))
    fd = os.open(left, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # created, nothing written yet
    os.close(fd)
    with pytest.raises(RestoreTargetError, match="unfinished"):
        system.restore(system.create_full_backup("docs").id, out)  # another restore: refused
    system.restore(backup_id, out)
    assert not (out / UNFINISHED_MARKER).exists()
    assert_same_tree(src, out)
    assert not list(out.rglob("*" + PARTIAL_SUFFIX))
