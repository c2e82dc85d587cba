"""Repacking (docs/GC.md section 4) on real catalogs and storage: once retention has deleted most
backups, the live blobs of mostly-dead packs are copied (sealed) into a new pack and the old packs go
after the grace period, so packs and stored bytes drop while every kept backup restores byte-identical
and verifies; a backup running while its chunks leave the index loses nothing; the old pack stays
readable where the catalog had its blobs until its grace has passed; and no region loses a chunk."""

from __future__ import annotations

import random
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from app import clock
from app.catalog import audit
from app.catalog.chunks import locate
from app.catalog.models import AuditEntry, Chunk, GcCandidate, Pack
from app.gc.run import collect_garbage
from app.repo.format import Kind
from app.system import BackupSystem
from tests.integration.test_gc import KEEP_NEWEST, fingerprint, packs_in_storage, write_tree
from tests.support.system import Factory

ONLY_NEWEST = {**KEEP_NEWEST, "backup_cross_region": False}


def rewrite(root: Path, names: list[int], seed: int, kib: int = 300) -> None:
    rng = random.Random(seed)
    for i in names:
        (root / f"f{i}.bin").write_bytes(rng.randbytes(kib * 1024))


def packs_of(system: BackupSystem, backup_id: str) -> set[str]:
    with system.context.sessions() as session:
        return set(session.scalars(select(Pack.id).where(Pack.backup_id == backup_id)))


def stored_bytes(system: BackupSystem) -> int:
    return sum(i.size for i in system.context.storage.list(Kind.PACKS))


#: Below the chunker's 256 KiB minimum: every file is exactly one chunk whatever the repository's chunker
#: seed. At 300 KiB about one seed in fifty cut a file in two, and a chunk count was one too many.
ONE_CHUNK_KIB = 240


def three_backups(
    system: BackupSystem, src: Path, kib: int = 300
) -> tuple[list[str], dict[str, dict[str, str]]]:
    """b1 writes f0..f5, b2 rewrites f0..f3, b3 rewrites f0..f2: once b1 and b2 are deleted, b1's data
    pack is a third live (f4, f5) and b2's a quarter (f3)."""
    write_tree(src, seed=1, files=6, kib=kib)
    system.add_source("docs", src)
    ids, prints = [], {}
    for step, names in enumerate(([], [0, 1, 2, 3], [0, 1, 2])):
        rewrite(src, names, seed=10 + step, kib=kib)
        ids.append(system.create_full_backup("docs").id)
        prints[ids[-1]] = fingerprint(src)
    return ids, prints


def data_pack(system: BackupSystem, backup_id: str) -> str:
    """The backup's pack holding file chunks (not the pack of its manifest's own chunks)."""
    root = system.context.repository.read_manifest_with_root(backup_id)[0]
    roots = {c[1] for c in root["entries"]["chunks"]}
    [pack] = packs_of(system, backup_id) - roots
    return pack


def test_repacking_after_retention_frees_packs_and_bytes_and_loses_nothing(
    make_system: Factory, tmp_path: Path
) -> None:
    system = make_system(**ONLY_NEWEST)
    src = tmp_path / "src"
    (b1, b2, b3), prints = three_backups(system, src, kib=ONE_CHUNK_KIB)  # chunks counted below
    sparse = {data_pack(system, b1), data_pack(system, b2)}
    assert system.apply_retention(confirm=True)[1].deleted == [b1, b2]
    before_packs, before_bytes = packs_in_storage(system), stored_bytes(system)

    dry = collect_garbage(system.context, confirm=False)
    assert dry.repack is not None and set(dry.repack.packs) == sparse and dry.repack.written == []
    assert packs_in_storage(system) == before_packs  # a dry run writes nothing

    first = collect_garbage(system.context, confirm=True, actor="test")
    assert first.repack is not None and set(first.repack.packs) == sparse, first.to_json()
    [new_pack] = first.repack.written
    assert first.repack.written_bytes < first.repack.bytes
    assert packs_in_storage(system) == before_packs | {new_pack}  # nothing deleted yet: marked only
    with system.context.sessions() as session:
        assert session.scalar(select(func.count()).where(Chunk.pack_id.in_(sparse))) == 0
        assert session.scalar(select(func.count()).where(Chunk.pack_id == new_pack)) == 3  # f3, f4, f5
        reasons = {
            r.pack_id: r.reason for r in session.execute(select(GcCandidate.pack_id, GcCandidate.reason))
        }
        assert {p: reasons[p] for p in sparse} == dict.fromkeys(sparse, "repacked")
        repacked = session.scalars(select(AuditEntry).where(AuditEntry.action == "gc.repacked")).all()
        assert [a.object for a in repacked] == [new_pack] and set(repacked[0].detail["packs"]) == sparse

    second = collect_garbage(system.context, confirm=True, actor="test")
    assert sparse <= set(second.deleted) and second.returned == [], second.to_json()
    kept_packs = packs_of(system, b3)
    assert packs_in_storage(system) == kept_packs | {new_pack}  # b1's and b2's packs are all gone
    assert stored_bytes(system) < before_bytes - first.marked_bytes  # more freed than unreferenced packs
    with system.context.sessions() as session:
        why = {
            r.object: r.detail
            for r in session.execute(
                select(AuditEntry.object, AuditEntry.detail).where(AuditEntry.action == "pack.deleted")
            )
        }
    assert all("repacked" in why[p]["reason"] and new_pack in why[p]["reason"] for p in sparse)
    with system.context.sessions() as session:  # entries added in batches still chain one to the next
        assert audit.verify_chain(session) == []

    out = tmp_path / "out"
    system.restore(b3, out)
    assert fingerprint(out) == prints[b3]
    assert system.verify_backup(data="all").outcome == "passed"
    third = collect_garbage(system.context, confirm=True)
    assert third.repack is not None and third.repack.packs == [] and third.deleted == []


def test_the_old_pack_stays_readable_where_the_catalog_had_its_blobs_until_its_grace_passes(
    make_system: Factory, tmp_path: Path
) -> None:
    system = make_system(**{**ONLY_NEWEST, "backup_gc_grace_hours": 1})
    src = tmp_path / "src"
    (b1, _b2, b3), prints = three_backups(system, src)
    old = data_pack(system, b1)
    system.apply_retention(confirm=True)
    with system.context.sessions() as session:  # as if written two hours ago: past the grace period
        session.execute(update(Pack).values(created_at=clock.now() - timedelta(hours=2)))
        session.commit()
        ids = list(session.scalars(select(Chunk.id).where(Chunk.pack_id == old)))
        planned = locate(session, ids)  # what a restore planned before the repack reads
    first = collect_garbage(system.context, confirm=True)
    assert first.repack is not None and old in first.repack.packs
    repo = system.context.repository
    for chunk_id, loc in planned.items():
        assert loc.pack_id == old
        blob = repo.read_blob(loc.pack_id, loc.offset, loc.length)
        assert len(repo.open_chunk(chunk_id, blob, raw_length=loc.raw_length)) == loc.raw_length
    second = collect_garbage(system.context, confirm=True)
    assert old not in second.deleted and second.waiting >= 1 and old in packs_in_storage(system)
    out = tmp_path / "out"
    system.restore(b3, out)  # reads the new pack now
    assert fingerprint(out) == prints[b3]


@pytest.mark.postgres
def test_a_backup_running_while_a_pack_is_repacked_loses_nothing(
    make_system: Factory, fresh_pg_url: str, tmp_path: Path
) -> None:
    system = make_system(catalog=fresh_pg_url, **ONLY_NEWEST)
    src = tmp_path / "src"
    (b1, b2, b3), prints = three_backups(system, src)
    p1, p2 = data_pack(system, b1), data_pack(system, b2)
    system.apply_retention(confirm=True)
    old = tmp_path / "old"  # b1's content again, in another source: it dedups against b1's chunks
    write_tree(old, seed=1, files=6, kib=300)
    system.add_source("old", old)

    loaded, repacked = threading.Event(), threading.Event()

    def pause_once(_done: int, _total: int) -> None:
        if not loaded.is_set():
            loaded.set()  # the chunk index is loaded: b1's chunks are known to this backup
            assert repacked.wait(60), "garbage collection did not repack in time"

    again: list[str] = []
    runner = threading.Thread(
        target=lambda: again.append(system.create_full_backup("old", progress=pause_once).id)
    )
    runner.start()
    assert loaded.wait(60)
    report = collect_garbage(system.context, confirm=True, actor="test")
    repacked.set()
    runner.join(120)
    assert report.repack is not None and set(report.repack.packs) == {p1, p2}
    with system.context.sessions() as session:
        blockers = session.scalar(select(GcCandidate.running).where(GcCandidate.pack_id == p1))
    assert blockers is not None and blockers["backups"] == again  # recorded after the repoint
    # the running backup named f0..f3 of b1, whose rows left the index: p1 comes back; p2 held none
    later = collect_garbage(system.context, confirm=True, actor="test")
    assert later.returned == [p1] and p2 in later.deleted, later.to_json()
    assert p1 in packs_in_storage(system) and p2 not in packs_in_storage(system)
    for backup_id, want in ((again[0], fingerprint(old)), (b3, prints[b3])):
        out = tmp_path / f"out-{backup_id}"
        system.restore(backup_id, out)
        assert fingerprint(out) == want, backup_id
    assert system.verify_backup(data="all").outcome == "passed"


def test_an_old_pack_stays_until_every_region_holds_its_live_chunks_new_pack(
    make_system: Factory, tmp_path: Path
) -> None:
    from app.replication.run import replicate
    from app.storage import open_storage

    system = make_system(**KEEP_NEWEST)  # replication on, to the default region's stand-in
    region = open_storage(system.settings.secondary_storage_urls["us-west-2"])
    src = tmp_path / "src"
    (b1, b2, b3), prints = three_backups(system, src)
    sparse = {data_pack(system, b1), data_pack(system, b2)}
    replicate(system.context, actor="test")
    system.apply_retention(confirm=True)
    first = collect_garbage(system.context, confirm=True)
    assert first.repack is not None
    [new_pack] = first.repack.written
    held = collect_garbage(system.context, confirm=True)
    assert set(held.held_for_regions) == sparse and not sparse & set(held.deleted)
    assert sparse <= {i.name for i in region.list(Kind.PACKS)}  # the region's b3 still reads them
    replicate(system.context, actor="test")
    swept = collect_garbage(system.context, confirm=True)
    assert sparse <= set(swept.deleted) and swept.problems == [], swept.to_json()
    in_region = {i.name for i in region.list(Kind.PACKS)}
    assert new_pack in in_region and not sparse & in_region
    out = tmp_path / "out"
    system.restore(b3, out)
    assert fingerprint(out) == prints[b3]


@pytest.mark.parametrize(
    ("max_unused", "backend"),
    [(0.05, "sqlite"), (1.0, "sqlite"), pytest.param(0.05, "postgres", marks=pytest.mark.postgres)],
)
def test_a_mostly_live_pack_is_repacked_while_dead_bytes_exceed_max_unused(
    make_system: Factory, tmp_path: Path, max_unused: float, backend: str, request: pytest.FixtureRequest
) -> None:
    """b1's data pack stays 5/6 live once b1 is deleted (above BACKUP_GC_REPACK_BELOW's 0.5), yet its
    dead sixth is more than 5 % of the repository: the default max-unused share repacks it, and one run
    asked to sweep what it marked (grace 0, nothing running) deletes it; 1 turns that rule off."""
    catalog = request.getfixturevalue("fresh_pg_url") if backend == "postgres" else None
    system = make_system(catalog=catalog, **ONLY_NEWEST, backup_gc_max_unused=max_unused)
    src = tmp_path / "src"
    write_tree(src, seed=1, files=6, kib=300)
    system.add_source("docs", src)
    first = system.create_full_backup("docs").id
    old = data_pack(system, first)
    rewrite(src, [0], seed=5)
    newest = system.create_full_backup("docs").id
    expected = fingerprint(src)
    assert system.apply_retention(confirm=True)[1].deleted == [first]

    report = collect_garbage(system.context, confirm=True, actor="test", sweep_marked=True)
    assert report.repack is not None and report.problems == []
    if max_unused == 1.0:
        assert report.repack.packs == [] and old in packs_in_storage(system)
        return
    assert report.repack.packs == [old] and old in report.deleted
    assert old not in packs_in_storage(system)
    with system.context.sessions() as session:
        assert session.scalar(select(func.count()).select_from(GcCandidate)) == 0  # swept in this run
    out = tmp_path / "out"
    system.restore(newest, out)
    assert fingerprint(out) == expected
    assert system.verify_backup(data="all").outcome == "passed"
