"""Bad input stops with a clear error that names the thing, and loses or overwrites nothing."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.catalog import chunks as chunk_index
from app.catalog.models import AuditEntry, Backup
from app.errors import (
    IntegrityError,
    LockedError,
    MasterKeyError,
    ObjectNotFoundError,
    RestoreTargetError,
    SourceError,
    WrongKeyError,
)
from app.repo.keys import MasterKey
from app.restore.target import PARTIAL_SUFFIX
from app.system import BackupSystem
from tests.support.system import Factory
from tests.support.trees import make_tree


def _pack_paths(system: BackupSystem) -> list[Path]:
    return sorted((system.settings.home / "repo" / "packs").rglob("*"), key=lambda p: p.stat().st_size)


def _chunk_of(system: BackupSystem, backup_id: str, path: str, index: int) -> chunk_index.ChunkLocation:
    """Where chunk `index` of file `path` of the backup is (which pack, which offset)."""
    entry = next(
        e for e in system.context.repository.read_manifest(backup_id)["entries"] if e["path"] == path
    )
    chunk_id = entry["chunks"][index]
    with system.context.sessions() as session:
        return chunk_index.locate(session, [chunk_id])[chunk_id]


def _corrupt(system: BackupSystem, where: chunk_index.ChunkLocation) -> None:
    """Flip one bit inside the stored chunk at `where` (its pack in local storage)."""
    pack = next(p for p in _pack_paths(system) if p.name == where.pack_id)
    data = bytearray(pack.read_bytes())
    data[where.offset + 100] ^= 0x01
    pack.write_bytes(bytes(data))


def _backed_up(system: BackupSystem, tmp_path: Path, **tree: int) -> tuple[Path, str]:
    src = make_tree(tmp_path / "src", **tree)
    system.add_source("docs", src)
    return src, system.create_full_backup("docs").id


def test_wrong_master_key_is_refused_before_anything_is_written(make_system: Factory, tmp_path: Path) -> None:
    first = make_system()
    _backed_up(first, tmp_path, big_mib=1, small=2)
    intruder = make_system(init=False, key=os.urandom(32).hex())
    with intruder.context.sessions() as session:
        rows_before = session.scalar(select(func.count()).select_from(Backup))
        audit_before = session.scalar(select(func.count()).select_from(AuditEntry))
    objects_before = sorted(p for p in (first.settings.home / "repo").rglob("*"))
    with pytest.raises(WrongKeyError, match="wrong master key"):
        intruder.create_full_backup("docs")
    with pytest.raises(WrongKeyError):
        intruder.restore("latest", tmp_path / "out", source="docs")
    assert not (tmp_path / "out").exists()
    assert sorted(p for p in (first.settings.home / "repo").rglob("*")) == objects_before
    with intruder.context.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Backup)) == rows_before
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == audit_before


def test_short_key_is_refused_with_the_reason(make_system: Factory) -> None:
    short = "0123456789abcdef0123456789abcdef"  # the spec's "32-character hex key": 128 bits
    system = make_system(init=False, key=short)
    with pytest.raises(MasterKeyError) as caught:
        system.init()
    text = str(caught.value)
    assert "BACKUP_ENCRYPTION_KEY" in text and "128 bits" in text and "64 hex" in text
    assert short not in text
    assert not (system.settings.home / "repo" / "keys").exists()


def test_corrupt_byte_in_a_pack_names_file_and_pack_and_leaves_nothing_half_written(
    system: BackupSystem, tmp_path: Path
) -> None:
    _src, backup_id = _backed_up(system, tmp_path, big_mib=8, small=0)
    where = _chunk_of(system, backup_id, "bin/blob.bin", 0)  # the pack that holds the file's first chunk
    biggest = next(p for p in _pack_paths(system) if p.name == where.pack_id)
    with open(biggest, "r+b") as handle:  # one flipped byte inside that chunk's ciphertext
        handle.seek(where.offset + 100)
        byte = handle.read(1)
        handle.seek(where.offset + 100)
        handle.write(bytes([byte[0] ^ 0x01]))
    out = tmp_path / "out"
    with pytest.raises(IntegrityError) as caught:
        system.restore(backup_id, out)
    message = str(caught.value)
    assert "bin/blob.bin" in message and biggest.name in message
    assert not list(out.rglob("*" + PARTIAL_SUFFIX))
    assert not (out / "bin" / "blob.bin").exists()


def test_corrupt_pack_with_keep_partial_keeps_the_partial_file(system: BackupSystem, tmp_path: Path) -> None:
    _src, backup_id = _backed_up(system, tmp_path, big_mib=8, small=0)
    last = _chunk_of(system, backup_id, "bin/blob.bin", -1)  # the file's chunks before it are written first
    _corrupt(system, last)
    with pytest.raises(IntegrityError):
        system.restore(backup_id, tmp_path / "out", keep_partial=True)
    assert list((tmp_path / "out").rglob("*" + PARTIAL_SUFFIX))


def test_keep_partial_keeps_the_chunks_checked_before_a_corrupt_one_of_the_same_run(
    system: BackupSystem, tmp_path: Path
) -> None:
    """A file alone in its pack: its chunks follow one another, so a restore writes them as one run
    (app/restore/engine.py); the last one corrupt, the ones before it are still written (keep_partial),
    as they were before runs. Seen failing before the fix: no partial file at all."""
    src = tmp_path / "src"
    src.mkdir()
    content = random.Random(7).randbytes(6 << 20)
    (src / "only.bin").write_bytes(content)
    system.add_source("one", src)
    backup_id = system.create_full_backup("one").id
    first = _chunk_of(system, backup_id, "only.bin", 0)
    last = _chunk_of(system, backup_id, "only.bin", -1)
    assert first.pack_id == last.pack_id and first.offset < last.offset  # one pack, in file order
    _corrupt(system, last)
    with pytest.raises(IntegrityError):
        system.restore(backup_id, tmp_path / "out", keep_partial=True)
    (partial,) = (tmp_path / "out").rglob("*" + PARTIAL_SUFFIX)
    kept = len(content) - last.raw_length
    assert partial.read_bytes()[:kept] == content[:kept]


def test_missing_pack_is_named_by_dry_run_and_restore(system: BackupSystem, tmp_path: Path) -> None:
    _src, backup_id = _backed_up(system, tmp_path, big_mib=1, small=2)
    victim = _pack_paths(system)[-1]
    victim.unlink()
    with pytest.raises(ObjectNotFoundError, match=victim.name):
        system.restore(backup_id, tmp_path / "dry", dry_run=True)
    with pytest.raises(ObjectNotFoundError, match=victim.name):
        system.restore(backup_id, tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*" + PARTIAL_SUFFIX))


def test_source_path_that_does_not_exist(system: BackupSystem, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a directory"):
        system.add_source("ghost", tmp_path / "nowhere")
    src = tmp_path / "gone"
    src.mkdir()
    system.add_source("gone", src)
    src.rmdir()
    with pytest.raises(SourceError, match=str(src)):
        system.create_full_backup("gone")


def test_restore_into_a_non_empty_directory_is_refused_unless_overwriting(
    system: BackupSystem, tmp_path: Path
) -> None:
    src, backup_id = _backed_up(system, tmp_path, big_mib=1, small=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    (out / "docs").mkdir()
    (out / "docs" / "ledger.csv").write_text("older content")
    with pytest.raises(RestoreTargetError, match="not empty"):
        system.restore(backup_id, out)
    assert (out / "docs" / "ledger.csv").read_text() == "older content"
    system.restore(backup_id, out, overwrite=True)
    assert (out / "docs" / "ledger.csv").read_bytes() == (src / "docs" / "ledger.csv").read_bytes()
    assert (out / "keep.txt").read_text() == "precious"  # files not in the backup are left alone


def test_two_backups_of_one_source_at_once_the_second_is_refused(
    system: BackupSystem, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", big_mib=4, small=2)
    system.add_source("docs", src)
    started, release = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def slow_progress(_done: int, _total: int) -> None:
        started.set()
        release.wait(30)

    def first() -> None:
        outcome["first"] = system.create_full_backup("docs", progress=slow_progress)

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(30)
    try:
        with pytest.raises(LockedError, match="source:docs is held by"):
            system.create_full_backup("docs")
    finally:
        release.set()
        thread.join(60)
    assert outcome["first"].state == "complete"  # type: ignore[attr-defined]
    backups = system.list_backups("docs")
    assert len(backups) == 1 and backups[0]["state"] == "complete"


def test_a_file_that_changes_while_read_is_flagged(system: BackupSystem, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    target = src / "growing.log"
    target.write_bytes(os.urandom(3 << 20))
    system.add_source("logs", src)

    def append_during_read(_done: int, _total: int) -> None:
        with open(target, "ab") as handle:
            handle.write(b"x")

    result = system.create_full_backup("logs", progress=append_during_read)
    assert result.state == "complete"
    assert any(
        w["path"] == "growing.log" and "changed while being read" in w["warning"] for w in result.warnings
    )
    assert system.show_backup(result.id)["warnings"]


def test_unknown_backup_and_unknown_source(system: BackupSystem, tmp_path: Path) -> None:
    from app.errors import BackupNotFoundError

    with pytest.raises(BackupNotFoundError, match="nope"):
        system.restore("nope", tmp_path / "out")
    with pytest.raises(SourceError, match="no source named 'x'"):
        system.create_full_backup("x")


def test_wrong_key_file_and_rotated_key(make_system: Factory, tmp_path: Path) -> None:
    system = make_system()
    src, old_backup = _backed_up(system, tmp_path, big_mib=1, small=2)
    old_key = system.settings.backup_encryption_key.get_secret_value()  # type: ignore[union-attr]
    new_key = MasterKey.generate()
    system.rotate_keys(new_key)
    with pytest.raises(WrongKeyError):
        make_system(init=False, key=old_key).restore(old_backup, tmp_path / "x")
    new_hex = tmp_path / "new.key"
    new_key.write_file(new_hex)
    rotated = make_system(init=False, key=new_hex.read_text().strip())
    rotated.restore(old_backup, tmp_path / "out")
    assert (tmp_path / "out" / "docs" / "ledger.csv").read_bytes() == (
        src / "docs" / "ledger.csv"
    ).read_bytes()
    after = rotated.create_full_backup("docs")
    new_key_id = rotated.context.repository.read_manifest(after.id)["backup"]["key_id"]
    old_key_id = rotated.context.repository.read_manifest(old_backup)["backup"]["key_id"]
    assert new_key_id != old_key_id  # rotation started a new data key; the old one still opens old data
