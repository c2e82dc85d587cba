"""Restore drills (docs/DRILLS.md): a file source restored to scratch and compared with its manifest, a
PostgreSQL source recovered, started, pg_amcheck'ed and counted; each timed and recorded; a drill
whose restore fails is a failed drill, never a success; a dry run writes nothing."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.catalog.models import AuditEntry, Drill
from app.context import Context
from app.drills.postgres import COUNT_ROWS
from app.drills.run import run_drills
from app.repo.format import Kind
from app.system import BackupSystem
from tests.support.cli import cli_env_for, run_cli
from tests.support.pgarchive import SOURCE, Archive, write_fetch_script
from tests.support.pgcluster import PgCluster, RecoveryArea
from tests.support.trees import make_tree


@pytest.fixture
def backed_up(system: BackupSystem, tmp_path: Path) -> BackupSystem:
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=2, small=8))
    system.create_full_backup("docs")
    return system


def _drills(system: BackupSystem) -> list[Drill]:
    with system.context.sessions() as session:
        return list(session.scalars(select(Drill)))


def test_a_file_drill_restores_compares_and_records_its_rto(backed_up: BackupSystem) -> None:
    [result] = backed_up.run_restore_drills()
    assert result.outcome == "passed", result.to_json()
    assert result.rto_seconds is not None and result.rto_seconds > 0 and result.within_target
    assert result.files == 12 and result.problems == []  # 8 small, ledger, blob, empty, private.key
    assert any("0 difference(s)" in line for line in result.checks)
    [row] = _drills(backed_up)
    assert row.outcome == "passed" and row.rto_seconds == pytest.approx(result.rto_seconds)
    assert row.rto_target_seconds == 7200 and row.backup_id == result.backup_id and row.point_reached
    assert not any((backed_up.settings.home / "drills").iterdir())  # the scratch copy is gone
    with backed_up.context.sessions() as session:
        assert session.scalar(select(func.count()).where(AuditEntry.action == "drill.finished")) == 1


def test_a_drill_whose_restore_fails_is_a_failed_drill_and_is_alerted(
    backed_up: BackupSystem, caplog: pytest.LogCaptureFixture
) -> None:
    storage = backed_up.context.storage
    biggest = max(storage.list(Kind.PACKS), key=lambda info: info.size)
    data = bytearray(storage.get(Kind.PACKS, biggest.name))
    data[300] ^= 0x01
    storage.put(Kind.PACKS, biggest.name, bytes(data))
    with caplog.at_level(logging.ERROR, logger="app.drills.run"):
        [result] = backed_up.run_restore_drills("docs")
    assert result.outcome == "failed" and result.error and biggest.name in result.error
    assert [r.outcome for r in _drills(backed_up)] == ["failed"]
    assert any("drill" in r.message and "failed" in r.message for r in caplog.records)


def test_a_dry_run_plans_and_writes_nothing(backed_up: BackupSystem) -> None:
    [result] = backed_up.run_restore_drills(mode="dry-run")
    assert result.outcome == "planned" and result.rto_seconds is None
    assert "would restore backup" in result.checks[0]
    assert _drills(backed_up) == [] and not (backed_up.settings.home / "drills").exists()


def test_a_full_simulation_restores_through_a_catalog_rebuilt_from_storage(backed_up: BackupSystem) -> None:
    [result] = backed_up.run_restore_drills(mode="full-simulation")
    assert result.outcome == "passed", result.to_json()
    assert result.checks[0].startswith("rebuilt a catalog from storage alone: 1 backup(s)")
    assert not any((backed_up.settings.home / "drills").iterdir())


def test_a_source_without_a_backup_fails_its_drill(system: BackupSystem, tmp_path: Path) -> None:
    system.add_source("empty", make_tree(tmp_path / "src", big_mib=1, small=1))
    [result] = system.run_restore_drills()
    assert result.outcome == "failed" and "no restorable backup" in (result.error or "")


def test_cli_dr_test_exits_15_on_a_failed_drill(tmp_path: Path) -> None:
    env = cli_env_for(tmp_path / "home")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(env, *args)

    src = make_tree(tmp_path / "src", big_mib=1, small=2)
    for args in (
        ("init",),
        ("source", "add", "docs", "--path", str(src)),
        ("backup", "run", "--source", "docs"),
    ):
        assert cli(*args).returncode == 0
    ok = cli("dr", "test")
    assert ok.returncode == 0 and "passed" in ok.stdout and "RTO" in ok.stdout, ok.stdout + ok.stderr
    cli("source", "add", "never", "--path", str(src))
    bad = cli("dr", "test")
    assert bad.returncode == 15 and "never" in bad.stderr and "FAILED" in bad.stderr, bad.stdout + bad.stderr


@pytest.mark.slow
def test_a_postgres_drill_recovers_starts_checks_and_removes_the_copy(
    archive: Archive, archived_cluster: PgCluster, recovery_area: RecoveryArea
) -> None:
    from app.backup.engine import run_backup

    archived_cluster.sql("CREATE TABLE matters (id serial PRIMARY KEY, note text)")
    archived_cluster.sql("INSERT INTO matters (note) SELECT 'n' || g FROM generate_series(1, 500) g")
    run_backup(archive.ctx, SOURCE, "full")
    archived_cluster.sql("INSERT INTO matters (note) SELECT 'm' || g FROM generate_series(1, 25) g")
    archived_cluster.wait_archived(archived_cluster.switch_wal())
    settings = archive.ctx.settings.model_copy(
        update={
            "pitr_restore_command": write_fetch_script(recovery_area.base / "fetch.sh"),
            "backup_drill_dir": recovery_area.base / "drills",
        }
    )
    ctx = Context(settings)
    try:
        [result] = run_drills(ctx, source=SOURCE)
        [simulated] = run_drills(ctx, source=SOURCE, mode="full-simulation")
    finally:
        ctx.close()
    # the catalog lost as well: rebuilt from storage alone (backups, chunks, WAL), then recovered through it
    assert simulated.outcome == "passed", simulated.to_json()
    assert simulated.checks[0].startswith("rebuilt a catalog from storage alone")
    assert simulated.checks[-2:] == result.checks[-2:]  # the same rows counted, pg_amcheck clean
    assert result.outcome == "passed", result.to_json()
    assert result.rto_seconds is not None and result.rto_seconds > 0 and result.point_reached is not None
    assert any("pg_amcheck" in line and "no corruption" in line for line in result.checks), result.checks
    live = archived_cluster.sql(COUNT_ROWS)  # every table of the source (the template has one of its own)
    assert ("public.matters", "525") in [(name, str(count)) for name, count in live]
    counted = next(line for line in result.checks if line.startswith("counted"))
    assert f"counted {sum(int(count) for _, count in live)} row(s) in {len(live)} table(s)" in counted, (
        counted
    )
    assert not any((recovery_area.base / "drills").iterdir())


def test_a_drill_of_links_pipes_and_a_changed_copy(system: BackupSystem, tmp_path: Path) -> None:
    from app.drills.compare import compare_tree

    src = make_tree(tmp_path / "src", big_mib=1, small=2)
    os.link(src / "docs" / "ledger.csv", src / "ledger-hard")
    os.mkfifo(src / "pipe")
    system.add_source("docs", src)
    backup = system.create_full_backup("docs")
    [result] = system.run_restore_drills()
    assert result.outcome == "passed", result.to_json()
    out = tmp_path / "out"
    system.restore(backup.id, out)
    entries = system.context.repository.read_manifest(backup.id)["entries"]
    assert compare_tree(out, entries)[1] == []
    (out / "ledger-hard").unlink()
    (out / "ledger-hard").write_text("a copy, not a link")
    (out / "extra.txt").write_text("not backed up")
    (out / "pipe").unlink()
    differences = compare_tree(out, entries)[1]
    assert any(d.startswith("ledger-hard: ") for d in differences), differences
    assert "pipe: missing" in differences and "extra.txt: restored, but not in the manifest" in differences


@pytest.mark.slow
def test_verification_names_a_wal_segment_a_base_backup_needs(
    archive: Archive, archived_cluster: PgCluster
) -> None:
    from app.backup.engine import run_backup
    from app.verify.options import VerifyOptions
    from app.verify.run import verify_backups
    from app.wal import names

    backup = run_backup(archive.ctx, SOURCE, "full")
    assert verify_backups(archive.ctx, VerifyOptions(data="none")).outcome == "passed"
    header = archive.ctx.repository.read_manifest_header(backup.id)
    first = header["postgres"]["start_wal"]
    archive.ctx.storage.delete(Kind.WAL, names.object_name(SOURCE, first))
    report = verify_backups(archive.ctx, VerifyOptions(data="none"))
    [outcome] = report.backups
    assert report.outcome == "damaged" and [p.kind for p in outcome.problems] == ["wal missing"]
    assert first in outcome.problems[0].message
