"""Retention on a real catalog and storage (docs/RETENTION.md): plan names every backup and the rule that
keeps it; apply deletes only with --confirm, row then manifest, each audited; legal holds block every
deletion until released; a clock in the future deletes nothing more; WAL outside the PITR window that no
kept base backup needs is thinned, and what is kept still recovers."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from app import clock
from app.catalog.models import AuditEntry, Backup, WalSegment
from app.errors import RestoreTargetError
from app.repo.format import Kind
from app.retention.apply import apply_plan
from app.retention.plan import plan_retention
from app.system import BackupSystem
from tests.support.cli import cli_env_for, run_cli
from tests.support.pgarchive import SOURCE, Archive
from tests.support.pgcluster import PgCluster
from tests.support.system import Factory
from tests.support.trees import assert_same_tree, make_tree

ONLY_NEWEST = {
    "backup_retention_daily": 1,
    "backup_retention_weekly": 0,
    "backup_retention_monthly": 0,
    "backup_retention_yearly": 0,
    "backup_retention_minimum": 1,
    "backup_retention_keep_within_hours": 0,
}


@pytest.fixture
def four_backups(make_system: Factory, tmp_path: Path) -> tuple[BackupSystem, Path, list[str]]:
    system = make_system(**ONLY_NEWEST)
    src = make_tree(tmp_path / "src", big_mib=1, small=4)
    system.add_source("docs", src)
    ids = []
    for i in range(4):
        (src / f"round{i}.txt").write_text(f"round {i}\n")
        ids.append(system.create_incremental_backup("docs").id)
    return system, src, ids


def _states(system: BackupSystem) -> dict[str, str]:
    with system.context.sessions() as session:
        return {b.id: b.state for b in session.scalars(select(Backup))}


def test_plan_names_every_backup_and_apply_deletes_only_when_confirmed(
    four_backups: tuple[BackupSystem, Path, list[str]], tmp_path: Path
) -> None:
    system, src, ids = four_backups
    plan = system.plan_retention()
    by_id = {b.id: b for b in plan.backups}
    assert set(by_id) == set(ids)
    assert by_id[ids[-1]].keep and any(r.startswith("daily") for r in by_id[ids[-1]].reasons)
    assert [b.id for b in plan.deletions] == ids[:-1]
    _, dry = system.apply_retention()
    assert dry.dry_run and dry.deleted == ids[:-1]
    assert set(_states(system).values()) == {"complete"}  # a dry run deleted nothing
    assert all(system.context.storage.stat(Kind.MANIFESTS, i) for i in ids)

    _, done = system.apply_retention(confirm=True)
    assert done.deleted == ids[:-1]
    states = _states(system)
    assert [states[i] for i in ids] == ["deleted", "deleted", "deleted", "complete"]
    assert [i for i in ids if system.context.storage.stat(Kind.MANIFESTS, i)] == [ids[-1]]
    with system.context.sessions() as session:
        audited = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "backup.deleted")))
    assert sorted(a.object or "" for a in audited) == sorted(ids[:-1])
    assert all(a.detail["reason"] == "no retention rule keeps it" for a in audited)
    system.restore(ids[-1], tmp_path / "out")  # what is kept restores
    assert_same_tree(src, tmp_path / "out")
    with pytest.raises(RestoreTargetError, match="is deleted"):
        system.restore(ids[0], tmp_path / "gone", dry_run=True)
    assert system.plan_retention().deletions == []  # deleted backups leave the plan


def test_a_legal_hold_blocks_deletion_until_released(
    four_backups: tuple[BackupSystem, Path, list[str]],
) -> None:
    system, _src, ids = four_backups
    held = system.add_hold("matter 2026-114, counsel J. Doe", backup_id=ids[0])
    source_hold = system.add_hold("regulator inquiry", source="docs")
    stale_plan = plan_retention(system.context)
    assert stale_plan.deletions == []
    system.release_hold(source_hold["id"], "inquiry closed")
    _, report = system.apply_retention(confirm=True)
    assert report.deleted == ids[1:-1]
    reasons = {b.id: b.reasons for b in system.plan_retention().backups}
    assert reasons[ids[0]] == [f"legal hold: #{held['id']} matter 2026-114, counsel J. Doe (by test)"]
    # a hold placed after a plan was made still wins: apply checks each backup again
    plan = plan_retention(system.context)
    system.release_hold(held["id"], "matter closed")
    plan = plan_retention(system.context)
    assert [b.id for b in plan.deletions] == [ids[0]]
    system.add_hold("a new matter", backup_id=ids[0])
    late = apply_plan(system.context, plan, confirm=True, actor="test")
    assert late.deleted == [] and "legal hold" in late.skipped[0]["why"]
    assert _states(system)[ids[0]] == "complete"
    with system.context.sessions() as session:
        actions = [a.action for a in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert actions.count("hold.added") == 3 and actions.count("hold.released") == 2
    assert {h["reason"] for h in system.list_holds()} == {"a new matter"}
    assert len(system.list_holds(include_released=True)) == 3


def test_a_clock_in_the_future_deletes_nothing_more(
    four_backups: tuple[BackupSystem, Path, list[str]],
) -> None:
    system, _src, ids = four_backups
    honest = [b.id for b in plan_retention(system.context).deletions]
    skewed = [b.id for b in plan_retention(system.context, now=clock.now() + timedelta(days=3650)).deletions]
    assert skewed == honest == ids[:-1]
    with system.context.sessions() as session:  # and backups dated after now are kept until then
        session.execute(
            update(Backup).where(Backup.id == ids[0]).values(started_at=clock.now() + timedelta(days=1))
        )
        session.commit()
    assert ids[0] not in [b.id for b in plan_retention(system.context).deletions]


def test_cli_retention_and_holds(tmp_path: Path) -> None:
    env = cli_env_for(tmp_path / "home", **ONLY_NEWEST)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(env, *args)

    src = make_tree(tmp_path / "src", big_mib=1, small=2)
    for args in (("init",), ("source", "add", "docs", "--path", str(src))):
        assert cli(*args).returncode == 0
    ids = [json.loads(cli("backup", "run", "--source", "docs", "--json").stdout)["id"] for _ in range(3)]
    plan = cli("retention", "plan")
    assert plan.returncode == 0 and plan.stdout.count("DELETE") == 2 and "daily" in plan.stdout, plan.stdout
    held = cli("hold", "add", ids[0], "--reason", "matter 7")
    assert held.returncode == 0 and "hold 1" in held.stdout
    assert "matter 7" in cli("hold", "list").stdout
    assert cli("hold", "add", ids[0]).returncode == 2  # a hold needs a reason
    dry = cli("retention", "apply")
    assert dry.returncode == 0 and "would delete 1 backup" in dry.stdout and "--confirm" in dry.stdout
    done = json.loads(cli("retention", "apply", "--confirm", "--json").stdout)
    assert done["applied"]["deleted"] == [ids[1]]
    assert cli("hold", "release", "1", "--reason", "closed").returncode == 0
    assert json.loads(cli("retention", "apply", "--confirm", "--json").stdout)["applied"]["deleted"] == [
        ids[0]
    ]


@pytest.mark.slow
def test_wal_outside_the_window_that_no_kept_base_needs_is_thinned(
    archive: Archive, archived_cluster: PgCluster
) -> None:
    from app.backup.engine import run_backup

    ctx = archive.ctx
    archived_cluster.sql("CREATE TABLE t (id serial PRIMARY KEY, note text)")
    a = run_backup(ctx, SOURCE, "full")
    between = []
    for note in ("x", "y"):
        archived_cluster.sql("INSERT INTO t (note) VALUES (%s)", note)
        between.append(archived_cluster.switch_wal())
    archived_cluster.wait_archived(*between)
    b = run_backup(ctx, SOURCE, "full")
    run_backup(ctx, SOURCE, "full")  # C, the newest
    now = clock.now()
    with ctx.sessions() as session:  # age the history: A 60 days, the WAL after it 50, B 45, C now
        for backup, days in ((a, 60), (b, 45)):
            row = session.get(Backup, backup.id)
            assert row is not None and row.pg_stopped_at is not None
            shift = timedelta(days=days)
            row.started_at, row.pg_started_at, row.pg_stopped_at = (
                row.started_at - shift,
                row.pg_started_at - shift,
                row.pg_stopped_at - shift,  # type: ignore[operator]
            )
        a_row = session.get(Backup, a.id)
        assert a_row is not None
        a_range = (a_row.pg_start_wal, a_row.pg_stop_wal)
        b_start = session.get(Backup, b.id).pg_start_wal  # type: ignore[union-attr]
        for seg in session.scalars(select(WalSegment)):
            if seg.name[:24] <= a_range[1]:
                seg.archived_at = now - timedelta(days=60)
            elif seg.name[:24] < (b_start or ""):
                seg.archived_at = now - timedelta(days=50)
        session.commit()
    plan = plan_retention(ctx)
    assert plan.deletions == []  # three daily backups, all kept
    [thinning] = plan.wal
    with ctx.sessions() as session:
        before_b = [
            s.name
            for s in session.scalars(select(WalSegment).order_by(WalSegment.name))
            if s.kind == "segment" and s.name < (b_start or "")
        ]
    # everything archived before B started goes (WAL older than A too), except A's own range
    expected = [n for n in before_b if not a_range[0] <= n <= a_range[1]]
    assert thinning.names == expected and set(between) <= set(expected)
    report = apply_plan(ctx, plan, confirm=True, actor="test")
    assert report.wal_deleted == len(thinning.names)
    for name in thinning.names:
        assert ctx.storage.stat(Kind.WAL, f"{SOURCE}-{name}") is None
    with ctx.sessions() as session:
        left = {s.name for s in session.scalars(select(WalSegment))}
    assert not left & set(thinning.names)
    assert {a_range[0], a_range[1]} <= left  # A's own WAL: it stays consistent
    from app.verify.options import VerifyOptions
    from app.verify.run import verify_backups

    assert verify_backups(ctx, VerifyOptions(data="none")).outcome == "passed"  # every kept base is whole
