"""File-tree backup and restore end to end, on SQLite + local storage and PostgreSQL + S3 (moto)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.backup.plan import GRANULARITY_NS
from app.catalog.models import Chunk, Pack
from app.repo.format import Kind, ObjectType
from app.system import BackupSystem
from tests.support.trees import assert_same_tree, make_tree


def _wait_past_granularity() -> None:
    """ctime cannot be set back: let files just written age past the change rule's window."""
    time.sleep(GRANULARITY_NS / 1e9 + 0.1)


def test_full_backup_restores_an_equal_tree(system_any_backend: BackupSystem, tmp_path: Path) -> None:
    system = system_any_backend
    src = make_tree(tmp_path / "src")
    system.add_source("docs", src)
    result = system.create_full_backup("docs")
    assert result.state == "complete"
    assert result.stats["files"] == 44  # ledger, blob, 40 small, empty, private.key
    assert result.stats["bytes_read"] == result.stats["bytes_total"]
    assert 0 < result.stats["bytes_stored"] < result.stats["bytes_total"]  # text compresses
    plan = system.restore(result.id, tmp_path / "out")
    assert plan.files == 44 and plan.symlinks == 2
    assert_same_tree(src, tmp_path / "out")
    assert (tmp_path / "out" / "empty-dir").is_dir()
    assert oct((tmp_path / "out" / "docs" / "private.key").stat().st_mode & 0o777) == oct(0o600)


def test_incremental_rereads_only_changed_files_and_restores_alone(
    system_any_backend: BackupSystem, tmp_path: Path
) -> None:
    system = system_any_backend
    src = make_tree(tmp_path / "src")
    system.add_source("docs", src)
    _wait_past_granularity()
    full = system.create_full_backup("docs")
    unchanged = system.create_incremental_backup("docs")
    assert unchanged.parent_id == full.id
    assert unchanged.stats["files_read"] == 0 and unchanged.stats["bytes_new"] == 0
    assert unchanged.stats["packs"] == 0

    with open(src / "docs" / "ledger.csv", "r+b") as handle:  # change 5 bytes in the middle
        handle.seek(200_000)
        handle.write(b"XXXXX")
    (src / "docs" / "new.txt").write_text("new file")
    (src / "docs" / "deep" / "er" / "n000.txt").unlink()
    inc = system.create_incremental_backup("docs")
    assert inc.stats["files_read"] == 2
    # content-defined chunking: one changed chunk of the ledger plus the new file, not the whole ledger
    assert 0 < inc.stats["bytes_new"] < (src / "docs" / "ledger.csv").stat().st_size
    out = tmp_path / "out"
    system.restore(inc.id, out)
    assert_same_tree(src, out)
    # the full backup still restores its own, older state
    older = system.restore(full.id, tmp_path / "old")
    assert older.files == 44
    assert (tmp_path / "old" / "docs" / "deep" / "er" / "n000.txt").exists()
    assert not (tmp_path / "old" / "docs" / "new.txt").exists()


def test_differential_compares_against_the_last_full(system: BackupSystem, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=5)
    system.add_source("docs", src)
    _wait_past_granularity()
    full = system.create_full_backup("docs")
    (src / "docs" / "a.txt").write_text("a")
    inc = system.create_incremental_backup("docs")
    (src / "docs" / "b.txt").write_text("b")
    diff = system.create_differential_backup("docs")
    assert inc.parent_id == full.id
    assert diff.parent_id == full.id and diff.type == "differential"
    assert diff.stats["files_read"] == 2  # a.txt and b.txt: both changed since the full
    system.restore(diff.id, tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")


def test_incremental_without_a_full_runs_full(system: BackupSystem, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    system.add_source("docs", src)
    result = system.create_incremental_backup("docs")
    assert result.type == "full" and result.parent_id is None
    assert any("ran a full backup" in w["warning"] for w in result.warnings)


def test_file_modified_right_after_the_parent_started_is_reread(system: BackupSystem, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    system.add_source("docs", src)
    system.create_full_backup("docs")  # files are younger than the granularity window: all re-read next
    again = system.create_incremental_backup("docs")
    assert again.stats["files_read"] == again.stats["files"]


@pytest.mark.postgres
@pytest.mark.s3
def test_archive_backup_uses_the_cold_storage_class_on_s3(
    make_system: object, fresh_pg_url: str, s3_bucket_url: str, s3_endpoint: str, tmp_path: Path
) -> None:
    from tests.support.s3server import s3_client

    system = make_system(catalog=fresh_pg_url, storage=s3_bucket_url)  # type: ignore[operator]
    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    system.add_source("docs", src)
    result = system.create_archive_backup("docs")
    assert result.type == "archive"
    row = system.get_backup_row(result.id)
    assert row.storage_class == "GLACIER_IR"
    bucket, _, rest = s3_bucket_url[len("s3://") :].partition("/")
    prefix = rest.split("?")[0]
    client = s3_client(s3_endpoint)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/packs/")["Contents"]]
    classes = {
        key.rsplit("/", 1)[-1]: client.head_object(Bucket=bucket, Key=key).get("StorageClass", "STANDARD")
        for key in keys
    }
    # the manifest's own chunks stay readable without a retrieval (docs/FORMAT.md section 6)
    root = system.context.repository.read_json(Kind.MANIFESTS, result.id, ObjectType.MANIFEST)
    manifest_packs = {chunk[1] for chunk in root["entries"]["chunks"]}
    assert manifest_packs and {classes[p] for p in manifest_packs} == {"STANDARD"}
    data_packs = set(classes) - manifest_packs
    assert data_packs and {classes[p] for p in data_packs} == {"GLACIER_IR"}
    system.restore(result.id, tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")


def test_restore_a_subset_of_paths(system: BackupSystem, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=5)
    system.add_source("docs", src)
    result = system.create_full_backup("docs")
    plan = system.restore(result.id, tmp_path / "out", paths=["docs/deep", "ledger-link"])
    assert plan.files == 5 and plan.symlinks == 1
    restored = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*"))
    assert "bin" not in restored and "docs/ledger.csv" not in restored
    assert "docs/deep/er/n004.txt" in restored
    assert (tmp_path / "out" / "docs" / "deep" / "er" / "n001.txt").read_bytes() == (
        src / "docs" / "deep" / "er" / "n001.txt"
    ).read_bytes()


def test_latest_selector_and_listing(system: BackupSystem, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=2)
    system.add_source("docs", src)
    first = system.create_full_backup("docs")
    second = system.create_incremental_backup("docs")
    assert system.show_backup("latest", "docs")["id"] == second.id
    listed = system.list_backups("docs")
    assert [b["id"] for b in listed] == [first.id, second.id]
    for field in (
        "id",
        "source",
        "type",
        "state",
        "started_at",
        "finished_at",
        "bytes_read",
        "bytes_new",
        "bytes_stored",
    ):
        assert field in listed[0]


def test_no_duplicate_chunk_rows_when_data_repeats(system: BackupSystem, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    payload = os.urandom(3 << 20)
    for i in range(6):  # six identical files: stored once
        (src / f"copy{i}.bin").write_bytes(payload)
    system.add_source("copies", src)
    result = system.create_full_backup("copies")
    assert result.stats["bytes_new"] == len(payload)
    with system.context.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Chunk)) == result.stats["new_chunks"]
        assert session.scalar(select(func.count()).select_from(Pack)) == result.stats["packs"]
    system.restore(result.id, tmp_path / "out")
    assert all((tmp_path / "out" / f"copy{i}.bin").read_bytes() == payload for i in range(6))
