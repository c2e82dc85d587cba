"""Garbage collection (docs/GC.md) on real catalogs and storage: packs only deleted backups needed are
marked, then deleted after the grace period; a backup running while they were marked holds them until it
finishes, and if it used them they return to the index; an unreadable manifest stops everything; and
retention plus GC, round after round beside running backups, never cost a kept backup a byte."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.catalog.models import AuditEntry, Backup, Chunk, GcCandidate, Lock, Pack
from app.errors import IntegrityError
from app.gc.run import collect_garbage
from app.repo.format import Kind
from app.system import BackupSystem
from tests.support.cli import cli_env_for, run_cli
from tests.support.system import Factory

KEEP_NEWEST = {
    "backup_retention_daily": 1,
    "backup_retention_weekly": 0,
    "backup_retention_monthly": 0,
    "backup_retention_yearly": 0,
    "backup_retention_minimum": 1,
    "backup_retention_keep_within_hours": 0,
    "backup_gc_grace_hours": 0,
}


def write_tree(root: Path, seed: int, files: int = 6, kib: int = 600) -> None:
    rng = random.Random(seed)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for i in range(files):
        (root / f"f{i}.bin").write_bytes(rng.randbytes(kib * 1024))


def fingerprint(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def packs_in_storage(system: BackupSystem) -> set[str]:
    return {i.name for i in system.context.storage.list(Kind.PACKS)}


def test_packs_of_deleted_backups_are_marked_then_deleted(make_system: Factory, tmp_path: Path) -> None:
    system = make_system(**KEEP_NEWEST)
    src = tmp_path / "src"
    write_tree(src, seed=1)
    system.add_source("docs", src)
    old = system.create_full_backup("docs").id
    old_packs = packs_in_storage(system)
    write_tree(src, seed=2)  # all new content
    new = system.create_full_backup("docs").id
    assert system.apply_retention(confirm=True)[1].deleted == [old]

    dry = collect_garbage(system.context, confirm=False)
    assert set(dry.marked) == old_packs and dry.deleted == []
    with system.context.sessions() as session:
        assert session.scalar(select(func.count()).select_from(GcCandidate)) == 0  # a dry run writes nothing

    first = collect_garbage(system.context, confirm=True, actor="test")
    assert set(first.marked) == old_packs and first.deleted == []
    assert packs_in_storage(system) >= old_packs  # marked, not yet deleted
    with system.context.sessions() as session:  # their chunks left the index: no new backup uses them
        assert session.scalar(select(func.count()).where(Chunk.pack_id.in_(old_packs))) == 0
    second = collect_garbage(system.context, confirm=True, actor="test")
    assert set(second.deleted) == old_packs and second.deleted_bytes > 0
    assert not packs_in_storage(system) & old_packs
    with system.context.sessions() as session:
        assert session.scalar(select(func.count()).where(Pack.id.in_(old_packs))) == 0
        audited = session.scalars(select(AuditEntry.object).where(AuditEntry.action == "pack.deleted")).all()
    assert set(audited) == old_packs
    out = tmp_path / "out"
    system.restore(new, out)
    assert fingerprint(out) == fingerprint(src)
    assert collect_garbage(system.context, confirm=True).deleted == []  # nothing more to do


def test_a_grace_period_holds_marked_packs(make_system: Factory, tmp_path: Path) -> None:
    system = make_system(**{**KEEP_NEWEST, "backup_gc_grace_hours": 1})
    src = tmp_path / "src"
    write_tree(src, seed=1)
    system.add_source("docs", src)
    system.create_full_backup("docs")
    write_tree(src, seed=2)
    system.create_full_backup("docs")
    system.apply_retention(confirm=True)
    assert collect_garbage(system.context, confirm=True).marked == []  # younger than the grace period


@pytest.mark.postgres
def test_a_backup_running_at_marking_holds_the_packs_and_brings_them_back(
    make_system: Factory, fresh_pg_url: str, tmp_path: Path
) -> None:
    system = make_system(catalog=fresh_pg_url, **KEEP_NEWEST)
    src = tmp_path / "src"
    write_tree(src, seed=1)
    system.add_source("docs", src)
    first = system.create_full_backup("docs").id
    a_packs = packs_in_storage(system)
    root = system.context.repository.read_manifest_with_root(first)[0]
    a_root_packs = {c[1] for c in root["entries"]["chunks"]}  # the pack of its manifest's own chunks
    write_tree(tmp_path / "other", seed=2)
    system.add_source("other", tmp_path / "other")
    system.create_full_backup("other")
    with system.context.sessions() as session:  # the first backup goes, as retention would delete it
        row = session.get(Backup, first)
        assert row is not None
        row.state = "deleted"
        session.commit()
    system.context.storage.delete(Kind.MANIFESTS, first)

    loaded, marked = threading.Event(), threading.Event()

    def pause_once(_done: int, _total: int) -> None:
        if not loaded.is_set():
            loaded.set()  # the chunk index is loaded: the first backup's chunks are known to this backup
            assert marked.wait(60), "garbage collection did not mark in time"

    again: list[str] = []
    runner = threading.Thread(
        target=lambda: again.append(system.create_full_backup("docs", progress=pause_once).id)
    )
    runner.start()
    assert loaded.wait(60)
    report = collect_garbage(system.context, confirm=True, actor="test")
    marked.set()
    runner.join(120)
    assert set(report.marked) == a_packs  # the index no longer offers them to new backups...
    with system.context.sessions() as session:
        [cand] = [c for c in session.scalars(select(GcCandidate))][:1]
        assert cand.running["backups"], "the running backup must be recorded as a blocker"
    # ...but the running backup had them already and used them: the sweep gives the data pack back.
    # Its manifest's own chunks, looked up at finalize, were stored again (no longer in the index), so
    # the old copy is not needed and goes.
    later = collect_garbage(system.context, confirm=True, actor="test")
    assert set(later.returned) == a_packs - a_root_packs and set(later.deleted) == a_root_packs, str(
        later.to_json()
    )
    out = tmp_path / "out"
    system.restore(again[0], out)
    assert fingerprint(out) == fingerprint(src)


def test_an_unreadable_manifest_stops_garbage_collection(make_system: Factory, tmp_path: Path) -> None:
    system = make_system(**KEEP_NEWEST)
    src = tmp_path / "src"
    write_tree(src, seed=1)
    system.add_source("docs", src)
    backup = system.create_full_backup("docs").id
    root = system.settings.home / "repo" / "manifests" / backup
    data = bytearray(root.read_bytes())
    data[-5] ^= 0xFF
    root.write_bytes(bytes(data))
    before = packs_in_storage(system)
    with pytest.raises(IntegrityError, match=f"manifest of backup {backup}"):
        collect_garbage(system.context, confirm=True)
    assert packs_in_storage(system) == before


@pytest.mark.postgres
@pytest.mark.slow
def test_retention_and_gc_beside_running_backups_never_cost_a_kept_backup_a_byte(
    make_system: Factory, fresh_pg_url: str, tmp_path: Path
) -> None:
    system = make_system(catalog=fresh_pg_url, **{**KEEP_NEWEST, "backup_retention_minimum": 2})
    src = tmp_path / "src"
    write_tree(src, seed=0, files=5, kib=300)
    system.add_source("docs", src)
    prints: dict[str, dict[str, str]] = {}
    errors: list[BaseException] = []
    stop = threading.Event()

    def back_up() -> None:
        try:
            for round_no in range(8):
                rng = random.Random(round_no)
                for i in rng.sample(range(5), 2):  # change two files, keep three: old chunks stay shared
                    (src / f"f{i}.bin").write_bytes(rng.randbytes(300 * 1024))
                prints_now = fingerprint(src)
                prints[system.create_incremental_backup("docs").id] = prints_now
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)
        finally:
            stop.set()

    runner = threading.Thread(target=back_up)
    runner.start()
    rounds = 0
    while not stop.is_set() or rounds < 3:
        system.apply_retention(confirm=True)
        collect_garbage(system.context, confirm=True, actor="stress")
        rounds += 1
    runner.join()
    assert not errors, errors
    for _ in range(2):  # settle: sweep what the last rounds marked
        system.apply_retention(confirm=True)
        collect_garbage(system.context, confirm=True, actor="stress")
    with system.context.sessions() as session:
        kept = [b.id for b in session.scalars(select(Backup).where(Backup.state == "complete"))]
        deleted = session.scalar(select(func.count()).where(Backup.state == "deleted"))
        gone = session.scalar(select(func.count()).where(AuditEntry.action == "pack.deleted"))
    assert len(kept) == 2 and deleted == 6 and gone and gone > 0
    for backup_id in kept:
        out = tmp_path / f"out-{backup_id}"
        system.restore(backup_id, out)
        assert fingerprint(out) == prints[backup_id], backup_id
    assert system.verify_backup(data="all").outcome == "passed"
    os.sync()


def test_cli_gc_run(tmp_path: Path) -> None:
    import json
    import subprocess

    env = cli_env_for(tmp_path / "home", **KEEP_NEWEST)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(env, *args)

    src = tmp_path / "src"
    write_tree(src, seed=1, files=2, kib=100)
    assert cli("init").returncode == 0 and cli("source", "add", "docs", "--path", str(src)).returncode == 0
    assert cli("backup", "run", "--source", "docs").returncode == 0
    write_tree(src, seed=2, files=2, kib=100)
    assert cli("backup", "run", "--source", "docs").returncode == 0
    assert cli("retention", "apply", "--confirm").returncode == 0
    dry = cli("gc", "run")
    # the old backup's data pack and the pack of its manifest's entries
    assert dry.returncode == 0 and "would delete 0 pack(s)" in dry.stdout and "mark 2" in dry.stdout, (
        dry.stdout
    )
    marked = json.loads(cli("gc", "run", "--confirm", "--json").stdout)
    assert len(marked["marked"]) == 2 and marked["deleted"] == []
    swept = json.loads(cli("gc", "run", "--confirm", "--json").stdout)
    assert swept["deleted"] == marked["marked"]

    # One command, one process: retention, then GC that sweeps what it marks (grace 0, nothing running).
    write_tree(src, seed=3, files=2, kib=100)
    assert cli("backup", "run", "--source", "docs").returncode == 0
    pruned = json.loads(cli("retention", "apply", "--confirm", "--prune", "--json").stdout)
    assert len(pruned["applied"]["deleted"]) == 1
    assert len(pruned["gc"]["marked"]) == 2 and sorted(pruned["gc"]["deleted"]) == sorted(
        pruned["gc"]["marked"]
    )


def test_deletion_reaches_every_region(make_system: Factory, tmp_path: Path) -> None:
    from app.replication.run import replicate
    from app.storage import open_storage

    system = make_system(**KEEP_NEWEST)
    region = open_storage(
        system.settings.secondary_storage_urls["us-west-2"]
    )  # the default region's stand-in
    src = tmp_path / "src"
    write_tree(src, seed=1, files=2, kib=200)
    system.add_source("docs", src)
    old = system.create_full_backup("docs").id
    old_packs = packs_in_storage(system)
    write_tree(src, seed=2, files=2, kib=200)
    system.create_full_backup("docs")
    replicate(system.context, actor="test")
    assert old_packs <= {i.name for i in region.list(Kind.PACKS)}
    assert region.stat(Kind.MANIFESTS, old) is not None
    assert system.apply_retention(confirm=True)[1].deleted == [old]
    assert region.stat(Kind.MANIFESTS, old) is None  # the manifest goes in every region
    collect_garbage(system.context, confirm=True)
    swept = collect_garbage(system.context, confirm=True)
    assert set(swept.deleted) == old_packs and swept.problems == []
    assert not old_packs & {i.name for i in region.list(Kind.PACKS)}


def test_a_second_gc_run_at_the_same_time_is_refused_and_does_nothing(
    make_system: Factory, tmp_path: Path
) -> None:
    from datetime import timedelta

    from app.catalog.locks import Lease
    from app.errors import LockedError
    from app.gc.run import LEASE

    system = make_system(**KEEP_NEWEST)
    src = tmp_path / "src"
    write_tree(src, seed=1, files=2, kib=100)
    system.add_source("docs", src)
    system.create_full_backup("docs")
    old_packs = packs_in_storage(system)
    write_tree(src, seed=2, files=2, kib=100)
    system.create_full_backup("docs")
    system.apply_retention(confirm=True)
    with Lease(system.context.sessions, LEASE, timedelta(minutes=10)):  # another run, in a live process
        with pytest.raises(LockedError, match="garbage collection is already running") as caught:
            collect_garbage(system.context, confirm=True, actor="test")
        assert caught.value.exit_code == 10
        with system.context.sessions() as session:
            assert session.scalar(select(func.count()).select_from(GcCandidate)) == 0
        assert set(collect_garbage(system.context, confirm=False).marked) == old_packs  # a dry run may
    assert set(collect_garbage(system.context, confirm=True).marked) == old_packs  # the lease was released
    with system.context.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Lock)) == 0


def test_a_restore_running_through_mark_and_sweep_keeps_its_packs_until_it_finishes(
    make_system: Factory, tmp_path: Path
) -> None:
    """A restore registers as a reader before it locates a chunk; retention then deletes its backup and
    GC (grace 0) marks and would sweep its packs, but they wait for the reader, then go."""
    from app.catalog import readers

    system = make_system(**KEEP_NEWEST)
    src = tmp_path / "src"
    write_tree(src, seed=1, files=4, kib=300)
    system.add_source("docs", src)
    old = system.create_full_backup("docs").id
    old_print, old_packs = fingerprint(src), packs_in_storage(system)
    write_tree(src, seed=2, files=4, kib=300)
    system.create_full_backup("docs")

    started, pruned = threading.Event(), threading.Event()
    registered: list[set[str]] = []

    def pause_once(_done: int, _total: int) -> None:
        if not started.is_set():
            with system.context.sessions() as session:
                registered.append(readers.running(session))
            started.set()  # its chunks are located: it reads them from the old packs
            assert pruned.wait(60), "retention and GC did not finish in time"

    out = tmp_path / "out"
    runner = threading.Thread(target=lambda: system.restore(old, out, progress=pause_once))
    runner.start()
    try:
        assert started.wait(60)
        assert [name.split(":")[:3] for name in registered[0]] == [["reader", "restore", old]]
        assert system.apply_retention(confirm=True)[1].deleted == [old]
        first = collect_garbage(system.context, confirm=True, actor="test", sweep_marked=True)
        assert set(first.marked) == old_packs and first.deleted == []  # marked, held by the reader
        second = collect_garbage(system.context, confirm=True, actor="test")
        assert second.deleted == [] and second.waiting == len(old_packs)
        assert packs_in_storage(system) >= old_packs
        with system.context.sessions() as session:
            assert all(c.running["readers"] for c in session.scalars(select(GcCandidate)))
    finally:
        pruned.set()
        runner.join(120)
    assert fingerprint(out) == old_print  # it read every chunk it had located
    with system.context.sessions() as session:
        assert readers.running(session) == set()  # it left the register when it finished
    assert set(collect_garbage(system.context, confirm=True, actor="test").deleted) == old_packs


def test_a_lease_is_renewed_while_held_and_a_run_that_lost_it_stops(make_system: Factory) -> None:
    """The background renewal keeps a short lease alive past its ttl; once another job has taken it
    (after it expired), the next renewal finds it gone and `check()` stops the job."""
    import time
    from datetime import timedelta

    from sqlalchemy import update as sql_update

    from app.catalog.locks import Lease
    from app.errors import LockedError

    system = make_system()
    sessions = system.context.sessions
    with Lease(sessions, "test-lease", timedelta(seconds=0.6)) as lease:
        first = _expiry(sessions, "test-lease")
        deadline = time.monotonic() + 30
        while _expiry(sessions, "test-lease") == first:  # renewed every ttl/3
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.05)
        lease.check()  # still ours
        with sessions() as session:  # another job took it over
            session.execute(sql_update(Lock).where(Lock.name == "test-lease").values(holder="elsewhere:1:x"))
            session.commit()
        while True:
            try:
                lease.check()
            except LockedError as exc:
                assert "lost" in exc.message
                break
            assert time.monotonic() < deadline, "the lost lease was never noticed"
            time.sleep(0.05)
    with sessions() as session:  # giving back a lease that is not ours leaves the other job's alone
        assert session.scalar(select(Lock.holder).where(Lock.name == "test-lease")) == "elsewhere:1:x"


def _expiry(sessions: object, name: str) -> object:
    with sessions() as session:  # type: ignore[operator]
        return session.scalar(select(Lock.expires_at).where(Lock.name == name))
