"""Replication to a secondary region (docs/REPLICATION.md) on local storage, with SQLite and PostgreSQL
catalogs: every object copied byte for byte and once; a manifest waits for its packs; the lag is
reported in status and health; a region's copies are verified and a damaged one is copied again; a
restore reads the region alone once the primary is gone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from app import clock
from app.catalog import replicas
from app.catalog.models import Backup, ReplicaObject
from app.errors import RepositoryError
from app.monitoring.health import get_health_status
from app.replication.run import replicate
from app.replication.status import replication_status
from app.system import BackupSystem
from tests.support.system import Factory
from tests.support.trees import assert_same_tree, make_tree

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-west-2"
COPIED_KINDS = ("keys", "config", "packs", "manifests", "wal")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "sqlite" else str(request.getfixturevalue("fresh_pg_url"))


def objects(root: Path) -> dict[str, bytes]:
    """Every object a repository directory holds that replication copies, by relative path."""
    found = {}
    for kind in COPIED_KINDS:
        for path in sorted((root / kind).rglob("*")) if (root / kind).is_dir() else []:
            if path.is_file():
                found[str(path.relative_to(root))] = path.read_bytes()
    return found


def region_dir(system: BackupSystem) -> Path:
    return system.settings.home / "regions" / REGION


def primary_dir(system: BackupSystem) -> Path:
    return system.settings.home / "repo"


def rows(system: BackupSystem) -> list[ReplicaObject]:
    with system.context.sessions() as session:
        return list(session.scalars(select(ReplicaObject).where(ReplicaObject.region == REGION)))


def test_every_object_is_copied_byte_for_byte_and_only_once(
    make_system: Factory, catalog: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replicas, "PAGE", 2)  # discovery reads the catalog a page at a time: several here
    system = make_system(catalog=catalog)
    src = make_tree(tmp_path / "src", big_mib=2, small=10)
    system.add_source("docs", src)
    system.create_full_backup("docs")
    (src / "docs" / "new.txt").write_text("a new file\n" * 1000)
    system.create_incremental_backup("docs")
    [status] = replication_status(system.context)
    assert status.lag_seconds >= 0 and status.oldest_waiting is not None  # nothing copied yet: waiting

    [first] = replicate(system.context)
    assert first.error is None and first.failed == 0 and first.manifests_held == 0
    primary = objects(primary_dir(system))
    assert objects(region_dir(system)) == primary  # byte for byte, every kind, nothing extra
    data_objects = sum(1 for p in primary if p.split("/")[0] in ("packs", "manifests", "wal"))
    assert first.discovered == data_objects > 2 * replicas.PAGE  # every page of the catalog was read
    assert first.copied == data_objects
    assert first.bytes_copied > 2 << 20

    [again] = replicate(system.context)
    assert (again.copied, again.present, again.failed) == (0, 0, 0)  # nothing new: nothing read or written
    [status] = replication_status(system.context)
    assert status.lag_seconds == 0 and status.oldest_waiting is None
    assert status.objects == {"pending": 0, "copied": len(primary), "failed": 0, "missing": 0, "damaged": 0}
    assert status.bytes["copied"] == sum(len(b) for b in primary.values())
    assert {r.state for r in rows(system)} == {"copied"}

    # Key rotation replaces the keyring in place: the next pass brings the region's up to date.
    system.rotate_keys(system.context.master_key(), new_data_key=True)
    assert objects(primary_dir(system))["keys/keyring"] != objects(region_dir(system))["keys/keyring"]
    replicate(system.context)
    assert objects(region_dir(system)) == objects(primary_dir(system))


def test_a_manifest_waits_for_its_packs_and_the_lag_reaches_status_and_health(
    make_system: Factory, catalog: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = make_system(catalog=catalog)
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=2, small=10))
    backup = system.create_full_backup("docs")
    packs = sorted(p.name for p in (primary_dir(system) / "packs").rglob("*") if p.is_file())
    assert len(packs) >= 2
    # The region refuses one pack: a non-empty directory where the pack would be renamed into place.
    blocked = region_dir(system) / "packs" / packs[0][:2] / packs[0] / "obstacle"
    blocked.mkdir(parents=True)

    [held] = replicate(system.context)
    assert held.failed == 1 and held.manifests_held == 1
    assert not (region_dir(system) / "manifests" / backup.id).exists()  # never a manifest before its packs
    states = {(r.kind, r.name): r for r in rows(system)}
    assert states[("packs", packs[0])].state == "failed" and states[("packs", packs[0])].error
    assert states[("manifests", backup.id)].state == "pending"
    [status] = replication_status(system.context)
    assert status.objects["failed"] == 1 and status.objects["pending"] == 1
    assert status.errors and packs[0] in status.errors[0]["object"]

    # The lag is the age of the oldest object still waiting: past 4 h a warning, past 8 h critical.
    real_now = clock.now
    oldest = status.oldest_waiting
    assert oldest is not None
    for hours, severity in ((3, None), (5, "warning"), (9, "critical")):
        monkeypatch.setattr(clock, "now", lambda h=hours: oldest + timedelta(hours=h))
        [status] = replication_status(system.context)
        assert status.lag_seconds == hours * 3600 and status.lag_exceeded == (severity is not None)
        issues = [i for i in get_health_status(system.context).issues if REGION in i.message]
        assert [i.severity for i in issues] == ([severity] if severity else [])
    monkeypatch.setattr(clock, "now", real_now)

    shutil.rmtree(blocked.parent)
    [caught_up] = replicate(system.context)
    assert caught_up.error is None and caught_up.failed == 0 and caught_up.manifests_held == 0
    assert caught_up.copied == 2  # the pack, then its manifest; the other pack is not copied again
    assert objects(region_dir(system)) == objects(primary_dir(system))
    [status] = replication_status(system.context)
    assert status.lag_seconds == 0 and status.objects["failed"] == status.objects["pending"] == 0
    assert not [i for i in get_health_status(system.context).issues if REGION in i.message]


def _cli(home: Path, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "DATABASE_URL", "EQUISPLIT"))}
    env.update(EQUISPLIT_DR_HOME=str(home), BACKUP_ENCRYPTION_KEY=key, PYTHONPATH=str(ROOT), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "app.cli.entry", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_restore_from_the_region_with_the_primary_gone(make_system: Factory, tmp_path: Path) -> None:
    system = make_system()
    key = system.settings.backup_encryption_key
    assert key is not None
    home = system.settings.home
    src = make_tree(tmp_path / "src", big_mib=2, small=10)
    system.add_source("docs", src)
    backup = system.create_full_backup("docs")
    system.close()

    early = _cli(home, key.get_secret_value(), "restore", backup.id, "--target", str(tmp_path / "early"),
                 "--from-region", REGION)  # fmt: skip
    assert early.returncode != 0 and "us-west-2" in early.stderr and "keys/keyring" in early.stderr
    unknown = _cli(home, key.get_secret_value(), "restore", backup.id, "--target", str(tmp_path / "x"),
                   "--from-region", "mars-1")  # fmt: skip
    assert (
        unknown.returncode == 2 and "unknown region 'mars-1'" in unknown.stderr and REGION in unknown.stderr
    )

    ran = _cli(home, key.get_secret_value(), "replication", "run", "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)[0]["copied"] >= 2
    shutil.rmtree(home / "repo")  # the primary is gone

    target = tmp_path / "restored"
    restored = _cli(home, key.get_secret_value(), "restore", backup.id, "--target", str(target),
                    "--from-region", REGION, "--json")  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert_same_tree(src, target)
    assert not (home / "repo").exists()  # nothing was read from (or created at) the primary
    verified = _cli(home, key.get_secret_value(), "backup", "verify", "--region", REGION, "--read-data", "--json")
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert report["outcome"] == "passed" and [b["backup"] for b in report["backups"]] == [backup.id]
    status = _cli(home, key.get_secret_value(), "replication", "status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)[0]["lag_seconds"] == 0


def test_verify_against_a_region_finds_a_damaged_copy_and_the_next_pass_copies_it_again(
    make_system: Factory, catalog: str | None, tmp_path: Path
) -> None:
    system = make_system(catalog=catalog)
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=2, small=10))
    backup = system.create_full_backup("docs")
    not_yet = BackupSystem(system.settings, region=REGION)
    try:
        with pytest.raises(RepositoryError, match=f"regions/{REGION}.*keys/keyring is missing"):
            not_yet.verify_backup(data="all")  # nothing in the region yet: said, not "passed"
    finally:
        not_yet.close()
    replicate(system.context)

    in_region = BackupSystem(system.settings, region=REGION)
    try:
        clean = in_region.verify_backup(data="all")
        assert clean.outcome == "passed" and [b.backup_id for b in clean.backups] == [backup.id]
        assert clean.packs_read == clean.packs_checked > 0
        biggest = max(
            (p for p in (region_dir(system) / "packs").rglob("*") if p.is_file()),
            key=lambda p: p.stat().st_size,
        )
        data = bytearray(biggest.read_bytes())
        data[100] ^= 0x01
        biggest.write_bytes(bytes(data))
        damaged = in_region.verify_backup(data="all")
    finally:
        in_region.close()
    assert damaged.outcome == "damaged" and damaged.damaged_packs == [biggest.name]
    with system.context.sessions() as session:
        assert session.get(Backup, backup.id).damaged_at is None  # the primary's records are untouched
        row = session.get(ReplicaObject, (REGION, "packs", biggest.name))
        assert row is not None and row.state == "damaged"
    assert system.verify_backup(data="all").outcome == "passed"  # the primary is whole

    [repair] = replicate(system.context)
    assert repair.copied == 1 and repair.error is None
    assert (
        biggest.read_bytes() == (primary_dir(system) / "packs" / biggest.name[:2] / biggest.name).read_bytes()
    )
    again = BackupSystem(system.settings, region=REGION)
    try:
        assert again.verify_backup(data="all").outcome == "passed"
    finally:
        again.close()


def test_a_backup_deleted_before_its_manifest_was_copied_is_missing_not_lag(
    make_system: Factory, tmp_path: Path
) -> None:
    system = make_system()
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=2, small=10))
    backup = system.create_full_backup("docs")
    packs = sorted(p.name for p in (primary_dir(system) / "packs").rglob("*") if p.is_file())
    blocked = region_dir(system) / "packs" / packs[0][:2] / packs[0] / "obstacle"
    blocked.mkdir(parents=True)
    [held] = replicate(system.context)
    assert held.manifests_held == 1
    # What retention does to a backup: the catalog row says deleted, then the manifest root goes.
    with system.context.sessions() as session, session.begin():
        row = session.get(Backup, backup.id)
        assert row is not None
        row.state, row.deleted_at = "deleted", clock.now()
    system.context.storage.delete("manifests", backup.id)
    shutil.rmtree(blocked.parent)

    [after] = replicate(system.context)
    assert after.error is None and after.manifests_held == 0
    with system.context.sessions() as session:
        manifest = session.get(ReplicaObject, (REGION, "manifests", backup.id))
        assert (
            manifest is not None
            and manifest.state == "missing"
            and manifest.error == "the backup was deleted"
        )
    [status] = replication_status(system.context)
    assert status.lag_seconds == 0 and status.oldest_waiting is None and status.objects["missing"] == 1
    assert not (region_dir(system) / "manifests" / backup.id).exists()


def test_a_restore_on_worker_processes_reads_the_region_alone(make_system: Factory, tmp_path: Path) -> None:
    """A restore big enough for worker processes (here: any size) reads the region in every process:
    the workers open the repository the restoring process opened, never the primary's."""
    system = make_system(backup_processes=2, backup_processes_min_bytes=0)
    src = make_tree(tmp_path / "src", big_mib=2, small=10)
    system.add_source("docs", src)
    backup = system.create_full_backup("docs")
    replicate(system.context, REGION)
    shutil.rmtree(primary_dir(system))  # the primary is gone
    with BackupSystem(system.settings, region=REGION) as regional:
        plan = regional.restore(backup.id, tmp_path / "restored")
    assert plan.processes == 2
    assert_same_tree(src, tmp_path / "restored")
    assert not primary_dir(system).exists()  # nothing was read from (or created at) the primary
