"""Verification (docs/VERIFY.md) on real storage: a whole repository verifies clean; a flipped byte, a
truncated, deleted or index-damaged pack is named with every backup and file it costs; damage leaves
the chunk index, so the next backup stores the content again and the repository is whole once more."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from app.catalog import chunks as chunk_index
from app.catalog.models import Backup, BackupVerification, PackVerification, Verification
from app.monitoring.health import get_health_status
from app.repo.format import PACK_TRAILER, Kind
from app.system import BackupSystem
from app.verify.report import VerificationReport
from tests.support.cli import cli_env_for, run_cli
from tests.support.system import Factory
from tests.support.trees import assert_same_tree, make_tree


def _first_chunk(system: BackupSystem, backup_id: str, path: str) -> chunk_index.ChunkLocation:
    entries = system.context.repository.read_manifest(backup_id)["entries"]
    entry = next(e for e in entries if e["path"] == path)
    with system.context.sessions() as session:
        return chunk_index.locate(session, [entry["chunks"][0]])[entry["chunks"][0]]


def _rewrite(system: BackupSystem, pack_id: str, change: object) -> None:
    storage = system.context.storage
    data = bytearray(storage.get(Kind.PACKS, pack_id))
    assert callable(change)
    storage.put(Kind.PACKS, pack_id, bytes(change(data)))


def _problem_kinds(report: VerificationReport, backup_id: str) -> set[str]:
    outcome = next(b for b in report.backups if b.backup_id == backup_id)
    return {p.kind for p in outcome.problems}


def _files_named(report: VerificationReport, backup_id: str) -> set[str]:
    outcome = next(b for b in report.backups if b.backup_id == backup_id)
    return {f for p in outcome.problems for f in p.files}


@pytest.fixture
def two_backups(system_any_backend: BackupSystem, tmp_path: Path) -> tuple[BackupSystem, Path, str, str]:
    system = system_any_backend
    src = make_tree(tmp_path / "src", big_mib=3, small=10)
    system.add_source("docs", src)
    first = system.create_full_backup("docs").id
    (src / "docs" / "ledger.csv").touch()  # re-read, same content: the incremental reuses its chunks
    second = system.create_incremental_backup("docs").id
    return system, src, first, second


def test_a_whole_repository_verifies_clean_and_records_what_it_read(
    two_backups: tuple[BackupSystem, Path, str, str],
) -> None:
    system, _src, first, second = two_backups
    report = system.verify_backup(data="all")
    assert report.outcome == "passed", report.to_json()
    assert {b.backup_id for b in report.backups} == {first, second}
    assert all(b.outcome == "passed" and b.packs_read == b.packs for b in report.backups)
    stored = {i.name: i.size for i in system.context.storage.list(Kind.PACKS)}
    assert report.packs_read == report.packs_checked == len(stored)
    assert report.bytes_read == sum(stored.values())
    with system.context.sessions() as session:
        run = session.get(Verification, report.id)
        assert run is not None and run.outcome == "passed" and run.bytes_read == report.bytes_read
        assert {r.pack_id for r in session.scalars(select(PackVerification))} == set(stored)
        assert {r.backup_id for r in session.scalars(select(BackupVerification))} == {first, second}
        assert all(
            b.verified_at is not None and b.damaged_at is None for b in session.scalars(select(Backup))
        )
    # the next incremental run reads only a rotating share of what was just read back
    again = system.verify_backup()
    assert again.outcome == "passed" and again.packs_read < len(stored)


def test_a_flipped_byte_names_pack_backups_and_file_then_the_next_backup_heals_it(
    two_backups: tuple[BackupSystem, Path, str, str], tmp_path: Path
) -> None:
    system, src, first, second = two_backups
    where = _first_chunk(system, first, "docs/ledger.csv")

    def flip(data: bytearray) -> bytearray:
        data[where.offset + where.length // 2] ^= 0x01
        return data

    _rewrite(system, where.pack_id, flip)
    report = system.verify_backup(data="all")
    assert report.outcome == "damaged" and report.damaged_packs == [where.pack_id]
    for backup_id in (first, second):  # the incremental reuses the file's chunks: it is damaged too
        assert _problem_kinds(report, backup_id) == {"chunk damaged"}
        assert "docs/ledger.csv" in _files_named(report, backup_id)
    assert report.chunks_forgotten == 1
    status = get_health_status(system.context)  # critical, naming both backups
    assert status.status == "critical"
    messages = " ".join(i.message for i in status.issues)
    assert first in messages and second in messages
    listed = {b["id"]: b for b in system.list_backups("docs")}
    assert listed[first]["damaged"] and listed[second]["damaged"]

    # a damaged backup is never a parent: the next incremental reads the file again and stores it
    third = system.create_incremental_backup("docs")
    assert third.stats["bytes_new"] > 0
    healed = system.verify_backup(data="all")
    assert healed.outcome == "passed", healed.to_json()
    assert {b.backup_id for b in healed.backups if b.healed} == {first, second}
    out = tmp_path / "out"
    system.restore(second, out)
    assert_same_tree(src, out)


@pytest.mark.parametrize("damage", ["truncate", "delete", "index"])
def test_a_damaged_pack_is_named_with_every_backup_and_file(
    two_backups: tuple[BackupSystem, Path, str, str], damage: str
) -> None:
    system, _src, first, second = two_backups
    where = _first_chunk(system, first, "bin/blob.bin")
    storage = system.context.storage
    if damage == "delete":
        storage.delete(Kind.PACKS, where.pack_id)
    elif damage == "truncate":
        _rewrite(system, where.pack_id, lambda data: data[: where.offset + where.length - 7])
    else:

        def hit_index(data: bytearray) -> bytearray:
            data[len(data) - PACK_TRAILER - 20] ^= 0x01
            return data

        _rewrite(system, where.pack_id, hit_index)
    report = system.verify_backup(data="all")
    assert report.outcome == "damaged" and where.pack_id in report.damaged_packs
    expected = {
        "delete": {"pack missing"},
        "truncate": {"pack size", "chunk damaged"},
        "index": {"pack index"},
    }
    for backup_id in (first, second):
        kinds = _problem_kinds(report, backup_id)
        assert expected[damage] <= kinds, kinds
        if damage != "index":  # the blobs themselves are lost: the files are named
            assert "bin/blob.bin" in _files_named(report, backup_id)
        assert all(where.pack_id in p.object for b in report.damaged for p in b.problems if "pack" in p.kind)


def test_structure_only_finds_a_deleted_pack_without_reading_data(
    two_backups: tuple[BackupSystem, Path, str, str],
) -> None:
    system, _src, first, _second = two_backups
    where = _first_chunk(system, first, "bin/blob.bin")
    system.context.storage.delete(Kind.PACKS, where.pack_id)
    report = system.verify_backup(data="none")
    assert report.outcome == "damaged" and report.damaged_packs == [where.pack_id]
    assert report.packs_read == 0 and report.bytes_read == 0
    assert "bin/blob.bin" in _files_named(report, first)


def test_verification_beside_a_running_backup_reports_no_damage(make_system: Factory, tmp_path: Path) -> None:
    system = make_system()
    src = make_tree(tmp_path / "src", big_mib=2, small=5)
    system.add_source("docs", src)
    system.create_full_backup("docs")
    big = make_tree(tmp_path / "big", seed=7, big_mib=24, small=200)
    system.add_source("big", big)
    started, reports = threading.Event(), []

    def slow(_done: int, _total: int) -> None:
        started.set()

    worker = threading.Thread(target=lambda: system.create_full_backup("big", progress=slow))
    worker.start()
    started.wait(30)
    key = system.settings.backup_encryption_key
    assert key is not None
    other = make_system(init=False, home=system.settings.home, key=key.get_secret_value())
    while worker.is_alive():
        reports.append(other.verify_backup(data="all"))
    beside = len(reports)
    worker.join()
    reports.append(other.verify_backup(data="all"))
    assert beside >= 1, "no verification ran while the backup ran"
    assert all(r.outcome == "passed" for r in reports), [r.to_json() for r in reports]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return cli_env_for(tmp_path / "home")


def test_cli_verify_exits_5_naming_the_damage_and_prints_json(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", big_mib=2, small=3)
    for args in (
        ("init",),
        ("source", "add", "docs", "--path", str(src)),
        ("backup", "run", "--source", "docs"),
    ):
        assert run_cli(cli_env, *args).returncode == 0
    ok = run_cli(cli_env, "backup", "verify", "--read-data", "--json")
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["outcome"] == "passed" and doc["backups_checked"] == 1 and doc["bytes_read"] > 0
    packs = sorted((tmp_path / "home" / "repo" / "packs").rglob("*"), key=lambda p: p.stat().st_size)
    victim = packs[-1]
    data = bytearray(victim.read_bytes())
    data[200] ^= 0xFF
    victim.write_bytes(bytes(data))
    bad = run_cli(cli_env, "backup", "verify", "--source", "docs", "--read-data")
    assert bad.returncode == 5, bad.stdout + bad.stderr
    assert victim.name in bad.stderr and "damaged" in bad.stderr and "file(s):" in bad.stderr
    assert "Traceback" not in bad.stderr
    listing = run_cli(cli_env, "backup", "list", "--source", "docs")
    assert "DAMAGED" in listing.stdout
    sample = run_cli(cli_env, "backup", "verify", "--sample", "200%")
    assert sample.returncode == 2 and "25%" in sample.stderr
