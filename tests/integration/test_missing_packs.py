"""A pack deleted from storage behind the catalog's back: no backup that needs it says `complete`, and
the next backup stores its content again (docs/FORMAT.md section 7). Local storage and S3 (moto)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.backup import engine, packcheck
from app.backup.plan import GRANULARITY_NS
from app.catalog import chunks
from app.catalog.models import AuditEntry, Pack
from app.repo.format import Kind, ObjectType
from app.system import BackupSystem
from tests.support.trees import assert_same_tree, make_tree


def _pack_of(system: BackupSystem, backup_id: str, path: str) -> str:
    """The pack holding the first chunk of `path` in the backup."""
    entry = next(
        e for e in system.context.repository.read_manifest(backup_id)["entries"] if e["path"] == path
    )
    with system.context.sessions() as session:
        return chunks.locate(session, entry["chunks"][:1])[entry["chunks"][0]].pack_id


def _delete_pack(system: BackupSystem, pack_id: str) -> None:
    system.context.storage.delete(Kind.PACKS, pack_id)
    assert system.context.storage.stat(Kind.PACKS, pack_id) is None


def test_a_lost_pack_is_never_called_complete_and_the_next_backup_stores_it_again(
    system_any_backend: BackupSystem, tmp_path: Path
) -> None:
    system = system_any_backend
    src = make_tree(tmp_path / "src")
    system.add_source("docs", src)
    time.sleep(GRANULARITY_NS / 1e9 + 0.1)  # the next run reuses unchanged files without reading them
    full = system.create_full_backup("docs")
    assert full.state == "complete"
    lost = _pack_of(system, full.id, "docs/ledger.csv")
    _delete_pack(system, lost)

    # The incremental reads nothing: every file is reused from the parent, the ledger's chunks too.
    inc = system.create_incremental_backup("docs")
    assert inc.state == "partial"
    named = {e["path"]: e["error"] for e in inc.errors}
    assert "docs/ledger.csv" in named
    assert all(lost in error for error in named.values())
    with system.context.sessions() as session:
        assert session.get(Pack, lost) is None  # left the index: nothing dedups against it again
        missing = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "pack.missing")))
    assert [a.object for a in missing] == [lost]
    assert "docs/ledger.csv" in missing[0].detail["files"]
    # What it holds restores; the files of the lost pack are named, not restored from nowhere.
    system.restore(inc.id, tmp_path / "partial")
    restored = {
        str(p.relative_to(tmp_path / "partial")) for p in (tmp_path / "partial").rglob("*") if p.is_file()
    }
    source = {str(p.relative_to(src)) for p in src.rglob("*") if p.is_file() and not p.is_symlink()}
    assert restored == source - set(named)
    assert all((tmp_path / "partial" / p).read_bytes() == (src / p).read_bytes() for p in restored)

    # Self-healing: the next backup reads the named files again and stores their chunks anew.
    healed = system.create_incremental_backup("docs")
    assert healed.state == "complete", healed.errors
    assert healed.stats["files_read"] == len(named)
    assert healed.stats["bytes_new"] > 0
    system.restore(healed.id, tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")
    # Older backups find the content again through the index, in its new pack.
    system.restore(full.id, tmp_path / "old")
    assert_same_tree(src, tmp_path / "old")


def test_a_full_backup_that_rereads_a_lost_packs_content_is_not_complete(
    system: BackupSystem, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    system.add_source("docs", src)
    first = system.create_full_backup("docs")
    lost = _pack_of(system, first.id, "bin/blob.bin")
    _delete_pack(system, lost)
    again = system.create_full_backup("docs")  # reads every file; its chunks dedup against the index
    assert again.state == "partial"
    assert any(e["path"] == "bin/blob.bin" and lost in e["error"] for e in again.errors)
    healed = system.create_full_backup("docs")
    assert healed.state == "complete"
    system.restore(healed.id, tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")


def test_a_lost_pack_of_manifest_chunks_is_stored_again(system: BackupSystem, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    system.add_source("docs", src)
    first = system.create_full_backup("docs")
    root = system.context.repository.read_json(Kind.MANIFESTS, first.id, ObjectType.MANIFEST)
    manifest_packs = {c[1] for c in root["entries"]["chunks"]}
    file_packs = {_pack_of(system, first.id, p) for p in ("bin/blob.bin", "docs/ledger.csv")}
    assert manifest_packs and not manifest_packs & file_packs
    for pack in manifest_packs:
        _delete_pack(system, pack)
    again = system.create_full_backup("docs")  # the same entries: the same manifest chunks
    assert again.state == "complete"
    assert system.context.repository.read_manifest(again.id)["entries"]  # readable: its chunks exist
    system.restore(again.id, tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")


class _LosesAPackWhileWalking:
    """The source's own walk, after which a pack is deleted from storage: an unchanged backup located
    its parent's chunks before the walk (app/backup/prepare.py), the pack is lost after that."""

    def __init__(self, inner: Any, lose: Callable[[], None]) -> None:
        self.inner, self.lose, self.kind = inner, lose, inner.kind

    def begin(self, ctx: Any, backup_id: str) -> None:
        self.inner.begin(ctx, backup_id)

    def walk(self, ctx: Any, watch: Any = None, reusable: Any = None) -> Any:
        found = self.inner.walk(ctx, watch, reusable)
        self.lose()
        return found

    def finish(self, ctx: Any, backup_id: str, make_writer: Any) -> None:
        self.inner.finish(ctx, backup_id, make_writer)

    def close(self) -> None:
        self.inner.close()


def _full_backup_then_lose_its_pack_on_the_next_walk(
    system: BackupSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, str]:
    """A full backup of a tree; the next backup's walk deletes the pack holding docs/ledger.csv (after
    that backup located its parent's chunks). The tree and the lost pack's id."""
    src = make_tree(tmp_path / "src")
    system.add_source("docs", src)
    time.sleep(GRANULARITY_NS / 1e9 + 0.1)  # the next run reuses unchanged files without reading them
    full = system.create_full_backup("docs")
    lost = _pack_of(system, full.id, "docs/ledger.csv")
    real_hooks = engine.hooks_for
    monkeypatch.setattr(
        engine, "hooks_for", lambda source: _LosesAPackWhileWalking(real_hooks(source), lambda: _delete_pack(system, lost))
    )
    return src, lost


def _assert_partial_for_the_lost_pack(system: BackupSystem, inc: Any, lost: str) -> None:
    assert inc.state == "partial"
    assert "docs/ledger.csv" in {e["path"] for e in inc.errors}
    with system.context.sessions() as session:
        assert session.get(Pack, lost) is None


def test_a_pack_lost_after_the_parents_chunks_were_located_is_still_found_missing(
    system: BackupSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _src, lost = _full_backup_then_lose_its_pack_on_the_next_walk(system, tmp_path, monkeypatch)
    inc = system.create_incremental_backup("docs")
    assert inc.stats["files_read"] == 0
    _assert_partial_for_the_lost_pack(system, inc, lost)


def test_an_incremental_looks_up_only_the_chunks_its_parent_lacked_and_still_finds_a_lost_pack(
    system: BackupSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, lost = _full_backup_then_lose_its_pack_on_the_next_walk(system, tmp_path, monkeypatch)
    (src / "docs" / "added.txt").write_bytes(b"one chunk the parent does not have\n" * 100)
    asked: list[int] = []
    real_packs_of = packcheck._packs_of
    monkeypatch.setattr(packcheck, "_packs_of", lambda s, ids, tier: asked.append(len(ids)) or real_packs_of(s, ids, tier))
    inc = system.create_incremental_backup("docs")
    assert inc.stats["files_read"] == 1
    # the parent's chunks, located as the backup started; then finalize asks for the added file's alone
    assert len(asked) == 2 and asked[0] > 1 and asked[1] == 1
    _assert_partial_for_the_lost_pack(system, inc, lost)
