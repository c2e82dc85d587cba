"""Per-region retention (docs/RETENTION.md section 5) on a real catalog and real local region directories:
a region whose policy keeps backups longer holds them after the primary's retention and garbage
collection, and restores them byte-identical with the primary gone; a region with a shorter policy drops
backups there only, and replication never copies them back; a legal hold keeps a backup in every region;
a backup dated in the future cannot make a region delete more."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from app import clock
from app.catalog import backup_regions
from app.catalog.models import AuditEntry, Backup, BackupRegion, ReplicaObject, WalSegment
from app.context import Context
from app.errors import RestoreTargetError
from app.gc.run import collect_garbage
from app.replication.run import replicate
from app.repo.format import Kind
from app.retention.apply import apply_plan
from app.retention.plan import plan_retention
from app.storage import open_storage
from app.system import BackupSystem
from tests.integration.test_replication_pitr import cluster  # noqa: F401
from tests.integration.test_replication_s3 import region_bucket  # noqa: F401
from tests.support.cli import cli_env_for, run_cli
from tests.support.pgarchive import SOURCE, Archive, write_fetch_script
from tests.support.pgcluster import PgCluster, RecoveryArea, chown_to_postgres
from tests.support.ports import free_port
from tests.support.s3server import TEST_REGION, RestartableS3Server, s3_client, second_s3_endpoint  # noqa: F401
from tests.support.system import Factory
from tests.support.trees import assert_same_tree, make_tree

REGION = "us-west-2"
#: The primary keeps only its newest backup.
ONLY_NEWEST = {
    "backup_retention_daily": 1,
    "backup_retention_weekly": 0,
    "backup_retention_monthly": 0,
    "backup_retention_yearly": 1,
    "backup_retention_minimum": 1,
    "backup_retention_keep_within_hours": 0,
    "backup_gc_grace_hours": 0,
}
#: The primary keeps everything (the tests' backups are all of one day).
KEEP_ALL = {**ONLY_NEWEST, "backup_retention_minimum": 10}
SHORT_REGION = f"{REGION}:daily=1,weekly=0,monthly=0,yearly=0,minimum=1,keep_within_hours=0"


def _round(i: int) -> str:
    return "".join(f"round {i} line {n}\n" for n in range((i + 1) * 3000))


def _backups(
    system: BackupSystem, src: Path, snapshots: Path, count: int = 4, *, replace: bool = False
) -> list[str]:
    """`count` backups of `src`, each after a change (a new file, or with `replace` the same file with new
    content), with a copy of the tree as it was for each."""
    ids = []
    for i in range(count):
        (src / ("round.txt" if replace else f"round{i}.txt")).write_text(_round(i))
        ids.append(system.create_incremental_backup("docs").id)
        shutil.copytree(src, snapshots / ids[-1], symlinks=True)
    return ids


def _region_manifests(system: BackupSystem) -> set[str]:
    storage = open_storage(system.settings.secondary_storage_urls[REGION])
    try:
        return {o.name for o in storage.list(Kind.MANIFESTS)}
    finally:
        storage.close()


def _primary_manifests(system: BackupSystem) -> set[str]:
    return {o.name for o in system.context.storage.list(Kind.MANIFESTS)}


def _audited_deletions(system: BackupSystem) -> list[AuditEntry]:
    return _audited_deletions_of(system, "backup.deleted")


def _audited_deletions_of(system: BackupSystem, action: str) -> list[AuditEntry]:
    with system.context.sessions() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_a_region_keeping_years_longer_restores_what_the_primary_deleted(
    make_system: Factory, tmp_path: Path
) -> None:
    system = make_system(**ONLY_NEWEST, backup_region_retention=f"{REGION}:yearly=10,archive_years=10")
    src = make_tree(tmp_path / "src", big_mib=1, small=4)
    system.add_source("docs", src)
    ids = _backups(system, src, tmp_path / "as-of")
    with system.context.sessions() as session:  # one backup a year: 2021, 2023, 2025 and today
        for backup_id, year in zip(ids[:3], (2021, 2023, 2025), strict=True):
            started = clock.now().replace(year=year)
            session.execute(update(Backup).where(Backup.id == backup_id).values(started_at=started))
        session.commit()

    plan = system.plan_retention()
    assert [b.id for b in plan.deletions] == []  # the region has no copy yet: the primary waits for it
    waiting = {b.id: b.reasons for b in plan.backups}
    assert waiting[ids[0]] == [f"region {REGION} keeps it by its policy and has no copy yet"]
    [region_plan] = plan.regions
    assert all(b.keep for b in region_plan.backups)
    assert any(r.startswith("yearly 2021") for r in region_plan.backups[0].reasons)

    replicate(system.context)
    plan, report = system.apply_retention(confirm=True)
    assert report.deleted == ids[:3] and report.region_deleted == {REGION: []}
    assert [b.kept_in for b in plan.deletions] == [[REGION]] * 3
    assert _primary_manifests(system) == {ids[3]}
    assert _region_manifests(system) == set(ids)  # the region kept its copies
    for entry in _audited_deletions(system):
        assert entry.detail["kept_in_regions"] == [REGION] and entry.detail["region"] == "us-east-1"

    for _ in range(2):  # mark, then sweep (grace 0): nothing a region-only backup needs goes
        gc = collect_garbage(system.context, confirm=True, actor="test")
        assert gc.problems == []
    [passed] = replicate(system.context)  # a repack's new packs reach the region (docs/GC.md section 4)
    assert passed.error is None
    again = system.plan_retention()
    assert [b.id for b in again.regions[0].backups if b.primary_deleted] == ids[:3]

    with pytest.raises(RestoreTargetError, match="is deleted, not restorable"):
        system.restore(ids[0], tmp_path / "from-primary")
    shutil.rmtree(system.settings.home / "repo")  # the primary's storage is gone
    in_region = BackupSystem(system.settings, region=REGION)
    try:
        verified = in_region.verify_backup(data="all")  # what only the region keeps is verified there too
        assert verified.outcome == "passed" and sorted(b.backup_id for b in verified.backups) == sorted(ids)
        for backup_id in ids:
            in_region.restore(backup_id, tmp_path / "restored" / backup_id)
            assert_same_tree(tmp_path / "as-of" / backup_id, tmp_path / "restored" / backup_id)
    finally:
        in_region.close()
    assert not (system.settings.home / "repo").exists()


def test_a_region_with_a_shorter_policy_deletes_there_only_and_never_gets_them_again(
    make_system: Factory, tmp_path: Path
) -> None:
    system = make_system(**KEEP_ALL, backup_region_retention=SHORT_REGION)
    src = make_tree(tmp_path / "src", big_mib=1, small=4)
    system.add_source("docs", src)
    ids = _backups(system, src, tmp_path / "as-of")
    replicate(system.context)
    assert _region_manifests(system) == set(ids)

    _, dry = system.apply_retention()
    assert dry.dry_run and dry.deleted == [] and dry.region_deleted == {REGION: ids[:3]}
    assert _region_manifests(system) == set(ids)  # a dry run deletes nothing
    _, report = system.apply_retention(confirm=True)
    assert report.deleted == [] and report.region_deleted == {REGION: ids[:3]}
    assert _primary_manifests(system) == set(ids)
    assert _region_manifests(system) == {ids[3]}
    audited = _audited_deletions(system)
    assert sorted(a.object or "" for a in audited) == sorted(ids[:3])
    assert {a.detail["region"] for a in audited} == {REGION}
    assert {a.detail["reason"] for a in audited} == {f"no retention rule of region {REGION} keeps it"}
    with system.context.sessions() as session:
        fates = {r.backup_id: r.state for r in session.scalars(select(BackupRegion))}
        assert fates == dict.fromkeys(ids[:3], backup_regions.DELETED)
        states = {b.id: b.state for b in session.scalars(select(Backup))}
    assert set(states.values()) == {"complete"}  # the primary's rows are untouched

    (src / "later.txt").write_text("after the region's retention\n")
    newest = system.create_incremental_backup("docs").id
    [passed] = replicate(system.context)  # discovery re-reads the last day: the dropped ones stay dropped
    assert passed.error is None
    assert _region_manifests(system) == {ids[3], newest}
    with system.context.sessions() as session:
        rows = set(
            session.scalars(
                select(ReplicaObject.name).where(
                    ReplicaObject.region == REGION, ReplicaObject.kind == "manifests"
                )
            )
        )
    assert rows == {ids[3], newest}

    in_region = BackupSystem(system.settings, region=REGION)
    try:
        with pytest.raises(RestoreTargetError, match=f"deleted in region {REGION}"):
            in_region.restore(ids[0], tmp_path / "gone")
    finally:
        in_region.close()
    system.restore(ids[0], tmp_path / "from-primary")  # the primary still has it
    assert_same_tree(tmp_path / "as-of" / ids[0], tmp_path / "from-primary")


def test_a_hold_keeps_a_backup_in_every_region(make_system: Factory, tmp_path: Path) -> None:
    system = make_system(**ONLY_NEWEST, backup_region_retention=SHORT_REGION)
    src = make_tree(tmp_path / "src", big_mib=1, small=2)
    system.add_source("docs", src)
    ids = _backups(system, src, tmp_path / "as-of", count=3)
    replicate(system.context)
    system.add_hold("matter 2026-114", backup_id=ids[0])
    plan, report = system.apply_retention(confirm=True)
    [region_plan] = plan.regions
    held = next(b for b in region_plan.backups if b.id == ids[0])
    assert held.keep and held.reasons[0].startswith("legal hold: #")
    assert report.deleted == [ids[1]] and report.region_deleted == {REGION: []}
    assert _primary_manifests(system) == {ids[0], ids[2]}
    assert _region_manifests(system) == {ids[0], ids[2]}


def test_a_future_dated_backup_cannot_make_a_region_delete_more(make_system: Factory, tmp_path: Path) -> None:
    system = make_system(**KEEP_ALL, backup_region_retention=SHORT_REGION)
    src = make_tree(tmp_path / "src", big_mib=1, small=2)
    system.add_source("docs", src)
    ids = _backups(system, src, tmp_path / "as-of", count=3)
    with system.context.sessions() as session:  # a clock ten years ahead wrote the newest
        future = clock.now() + timedelta(days=3650)
        session.execute(update(Backup).where(Backup.id == ids[2]).values(started_at=future))
        session.commit()
    replicate(system.context)
    plan, report = system.apply_retention(confirm=True)
    kept = {b.id: b.reasons for b in plan.regions[0].backups if b.keep}
    assert set(kept) == {ids[1], ids[2]}  # the newest present backup still fills daily and minimum
    assert kept[ids[2]] == ["dated after now (clock skew?): kept until the clock passes it"]
    assert report.region_deleted == {REGION: [ids[0]]}
    assert _region_manifests(system) == {ids[1], ids[2]}


def test_cli_plan_per_region_and_apply(tmp_path: Path) -> None:
    env = cli_env_for(tmp_path / "home", **KEEP_ALL, backup_region_retention=SHORT_REGION)
    src = make_tree(tmp_path / "src", big_mib=1, small=2)
    run_cli(env, "init", ok=True)
    run_cli(env, "source", "add", "docs", "--path", str(src), ok=True)
    for i in range(2):
        (src / f"round{i}.txt").write_text(f"round {i}\n")
        run_cli(env, "backup", "run", "--source", "docs", ok=True)
    run_cli(env, "replication", "run", ok=True)
    plan = json.loads(run_cli(env, "retention", "plan", "--region", REGION, "--json", ok=True).stdout)
    assert plan["region"] == REGION and plan["overrides"]["daily"] == 1
    assert [b["keep"] for b in plan["backups"]] == [False, True] and plan["delete"] == 1
    text = run_cli(env, "retention", "plan", ok=True).stdout
    assert f"region {REGION} (daily=1," in text and "no rule of this region keeps it" in text
    unknown = run_cli(env, "retention", "plan", "--region", "mars-1")
    assert unknown.returncode != 0 and "unknown region 'mars-1'" in unknown.stderr
    applied = run_cli(env, "retention", "apply", "--confirm", ok=True).stdout
    assert f"deleted 1 backup(s) in region {REGION} only" in applied


@pytest.mark.s3
@pytest.mark.postgres
@pytest.mark.slow
def test_on_two_s3_endpoints_a_region_keeping_longer_restores_with_the_primary_bucket_emptied(
    make_system: Factory,
    fresh_pg_url: str,
    s3_bucket_url: str,
    s3_endpoint: str,
    second_s3_endpoint: RestartableS3Server,  # noqa: F811
    region_bucket: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    region_url = f"s3://{region_bucket}/dr?endpoint_url={second_s3_endpoint.endpoint}&region={TEST_REGION}"
    system = make_system(
        catalog=fresh_pg_url,
        storage=s3_bucket_url,
        secondary_regions=["eu-central-1"],
        backup_secondary_storage_urls={"eu-central-1": region_url},
        backup_region_retention="eu-central-1:minimum=10",
        **ONLY_NEWEST,
    )
    src = make_tree(tmp_path / "src", big_mib=1, small=2)
    system.add_source("docs", src)
    ids = _backups(system, src, tmp_path / "as-of", count=2)
    replicate(system.context)
    _, report = system.apply_retention(confirm=True)
    assert report.deleted == [ids[0]]
    for _ in range(2):
        assert collect_garbage(system.context, confirm=True, actor="test").problems == []
    replicate(system.context)
    s3 = s3_client(s3_endpoint)
    primary_bucket = s3_bucket_url.split("/")[2]
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=primary_bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=primary_bucket, Delete={"Objects": keys})
    in_region = BackupSystem(system.settings, region="eu-central-1")
    try:
        in_region.restore(ids[0], tmp_path / "restored")
    finally:
        in_region.close()
    assert_same_tree(tmp_path / "as-of" / ids[0], tmp_path / "restored")


def test_a_region_drops_the_packs_only_its_dropped_backups_needed_and_gets_them_back_when_needed(
    make_system: Factory, tmp_path: Path
) -> None:
    system = make_system(**KEEP_ALL, backup_region_retention=SHORT_REGION)
    src = tmp_path / "src"  # one file, new content each time: each backup's data only it needs
    src.mkdir()
    system.add_source("docs", src)
    ids = _backups(system, src, tmp_path / "as-of", count=3, replace=True)
    replicate(system.context)
    region_packs = system.settings.home / "regions" / REGION / "packs"
    before = {p.name for p in region_packs.rglob("*") if p.is_file()}
    system.apply_retention(confirm=True)

    dry = collect_garbage(system.context, confirm=False)
    assert dry.region_dropped[REGION] and {p.name for p in region_packs.rglob("*") if p.is_file()} == before
    gc = collect_garbage(system.context, confirm=True, actor="test")
    assert gc.problems == [] and gc.deleted == [] and gc.marked == []  # the primary keeps every backup
    dropped = set(gc.region_dropped[REGION])
    assert dropped == set(dry.region_dropped[REGION])
    assert {p.name for p in region_packs.rglob("*") if p.is_file()} == before - dropped
    assert all(system.context.storage.stat(Kind.PACKS, p) for p in dropped)  # only in the region
    audited = [a for a in _audited_deletions_of(system, "pack.deleted") if a.object in dropped]
    assert len(audited) == len(dropped) and {a.detail["region"] for a in audited} == {REGION}
    assert collect_garbage(system.context, confirm=True, actor="test").region_dropped[REGION] == []

    in_region = BackupSystem(system.settings, region=REGION)
    try:
        in_region.restore(ids[2], tmp_path / "kept")  # what the region keeps still restores
        assert_same_tree(tmp_path / "as-of" / ids[2], tmp_path / "kept")
        [again] = replicate(system.context)
        assert again.copied == 0  # a dropped pack is not copied back for nothing
        (src / "round.txt").write_text(_round(0))  # the first backup's content once more: deduplicated
        back = system.create_incremental_backup("docs").id
        [revived] = replicate(system.context)
        assert revived.error is None
        assert dropped & {p.name for p in region_packs.rglob("*") if p.is_file()}  # copied there again
        in_region.restore(back, tmp_path / "back")
        assert_same_tree(src, tmp_path / "back")
    finally:
        in_region.close()


@pytest.mark.slow
def test_wal_is_thinned_in_each_region_by_its_own_window(
    archive: Archive, archived_cluster: PgCluster
) -> None:
    """Before, WAL thinning deleted only the primary's objects: every region kept every WAL file forever."""
    from app.backup.engine import run_backup

    settings = archive.ctx.settings.model_copy(
        update={
            "secondary_regions": [REGION, "eu-central-1"],
            "backup_region_retention": {"eu-central-1": {"pitr_window_days": 90}},
        }
    )
    ctx = Context(settings)
    try:
        archived_cluster.sql("CREATE TABLE t (id serial PRIMARY KEY, note text)")
        a = run_backup(ctx, SOURCE, "full")
        between = []
        for note in ("x", "y"):
            archived_cluster.sql("INSERT INTO t (note) VALUES (%s)", note)
            between.append(archived_cluster.switch_wal())
        archived_cluster.wait_archived(*between)
        b = run_backup(ctx, SOURCE, "full")
        run_backup(ctx, SOURCE, "full")
        now = clock.now()
        with ctx.sessions() as session:  # A 60 days old, the WAL after it 50, B 45: as in test_retention
            for backup, days in ((a, 60), (b, 45)):
                row = session.get(Backup, backup.id)
                assert row is not None and row.pg_stopped_at is not None and row.pg_started_at is not None
                shift = timedelta(days=days)
                row.started_at, row.pg_started_at = row.started_at - shift, row.pg_started_at - shift
                row.pg_stopped_at = row.pg_stopped_at - shift
            a_row, b_row = session.get(Backup, a.id), session.get(Backup, b.id)
            assert a_row is not None and b_row is not None
            a_stop, b_start = a_row.pg_stop_wal or "", b_row.pg_start_wal or ""
            for seg in session.scalars(select(WalSegment)):
                if seg.name[:24] <= a_stop:
                    seg.archived_at = now - timedelta(days=60)
                elif seg.name[:24] < b_start:
                    seg.archived_at = now - timedelta(days=50)
            session.commit()
        for passed in replicate(ctx):  # the regions hold every WAL file, dated as the primary's
            assert passed.error is None
        plan = plan_retention(ctx)
        [primary] = plan.wal
        regions = {r.region: r for r in plan.regions}
        [west] = regions[REGION].wal  # the primary's policy: the same files
        assert [n.split("-", 1)[1] for n in west.names] == primary.names and set(between) <= set(
            primary.names
        )
        assert regions["eu-central-1"].wal == []  # 90 days: every file since A is in its window

        report = apply_plan(ctx, plan, confirm=True, actor="test")
        assert report.region_wal_deleted == {REGION: len(west.names), "eu-central-1": 0}
        home = settings.home / "regions"
        for name in west.names:
            assert not (home / REGION / Kind.WAL / name).exists()
            assert (home / "eu-central-1" / Kind.WAL / name).exists()
        with ctx.sessions() as session:
            audited = [
                e for e in session.scalars(select(AuditEntry).where(AuditEntry.action == "wal.deleted"))
                if e.detail.get("region") == REGION
            ]  # fmt: skip
        assert sum(e.detail["count"] for e in audited) == len(west.names)
    finally:
        ctx.close()


@pytest.mark.slow
def test_dr_recover_from_a_region_starts_from_a_base_backup_only_that_region_keeps(
    archive: Archive,
    cluster: PgCluster,  # noqa: F811
    recovery_area: RecoveryArea,
) -> None:
    archive.env.update(
        {k.upper(): str(v) for k, v in ONLY_NEWEST.items()},
        BACKUP_PITR_WINDOW_DAYS="1",
        BACKUP_REGION_RETENTION=f"{REGION}:minimum=5,pitr_window_days=30",
    )
    cluster.sql("CREATE TABLE marks (id serial PRIMARY KEY, note text)")
    first = json.loads(archive.cli("backup", "run", "--source", SOURCE, "--type", "full", "--json").stdout)
    cluster.sql("INSERT INTO marks (note) VALUES ('after the first')")
    cluster.wait_archived(cluster.switch_wal())
    second = json.loads(archive.cli("backup", "run", "--source", SOURCE, "--type", "full", "--json").stdout)
    archive.cli("backup", "run", "--source", SOURCE, "--type", "full", "--json")  # the newest
    with archive.ctx.sessions() as session:  # ten and five days old: both before the primary's 1-day window
        for backup_id, days in ((first["id"], 10), (second["id"], 5)):
            row = session.get(Backup, backup_id)
            assert row is not None and row.pg_started_at is not None and row.pg_stopped_at is not None
            shift = timedelta(days=days)
            row.started_at, row.pg_started_at = row.started_at - shift, row.pg_started_at - shift
            row.pg_stopped_at = row.pg_stopped_at - shift
        stop_lsn = session.get(Backup, first["id"]).pg_stop_lsn  # type: ignore[union-attr]
        session.commit()
    archive.cli("replication", "run")
    applied = json.loads(archive.cli("retention", "apply", "--confirm", "--json").stdout)["applied"]
    assert applied["deleted"] == [first["id"]] and applied["region_deleted"] == {REGION: []}

    cluster.stop("fast")
    shutil.rmtree(archive.home / "repo")  # the primary is gone
    chown_to_postgres(archive.home)
    port = free_port()
    fetch = write_fetch_script(recovery_area.base / "fetch.sh")
    assert stop_lsn is not None
    proc = archive.cli(
        "dr", "recover", "--source", SOURCE, "--lsn", stop_lsn, "--target", str(recovery_area.new_dir()),
        "--start", "--port", str(port), "--restore-command", fetch, "--from-region", REGION, "--json",
        ok=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["success"] and result["plan"]["backup"]["id"] == first["id"]
    assert recovery_area.sql(port, "SELECT count(*) FROM marks") == [(0,)]  # as it was at its end
