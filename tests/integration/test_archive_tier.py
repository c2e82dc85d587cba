"""The archive tier (docs/ARCHIVE.md) on SQLite + local storage: an archive backup stores every file
chunk it needs in cold packs of its own, dedup'ing only against cold copies; standard backups never
reference a cold copy; garbage collection keeps each copy while its tier needs it; a rebuilt catalog
gets every pack's tier back from storage."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select, update

from app.catalog.models import Backup, Chunk, Pack
from app.gc.run import collect_garbage
from app.repo import manifest
from app.repo.format import Kind, ObjectType, Tier
from app.system import BackupSystem
from tests.support.system import Factory
from tests.support.trees import assert_same_tree, make_tree

GRACE_0 = {"backup_gc_grace_hours": 0}


def delete_backup(system: BackupSystem, backup_id: str) -> None:
    """What retention does to a backup no rule keeps: its row `deleted`, then its manifest root."""
    with system.context.sessions() as session:
        session.execute(update(Backup).where(Backup.id == backup_id).values(state="deleted"))
        session.commit()
    system.context.storage.delete(Kind.MANIFESTS, backup_id)


def file_chunks(system: BackupSystem, backup_id: str) -> set[str]:
    entries = system.context.repository.read_manifest(backup_id)["entries"]
    return {c for _, ids in manifest.file_chunks(entries) for c in ids}


def tiers_of_packs(system: BackupSystem) -> dict[str, str]:
    """Each pack in storage and the tier its own index says."""
    repo = system.context.repository
    return {info.name: repo.read_pack_index_tier(info.name, info.size)[1] for info in repo.list_packs()}


def copies(system: BackupSystem, chunk_ids: set[str], tier: str) -> dict[str, str]:
    """chunk id -> pack of its indexed copy of `tier`."""
    with system.context.sessions() as session:
        rows = session.execute(select(Chunk.id, Chunk.pack_id).where(Chunk.id.in_(chunk_ids), Chunk.tier == tier))
        return {chunk_id: pack_id for chunk_id, pack_id in rows}


def collect_twice(system: BackupSystem) -> None:
    collect_garbage(system.context, confirm=True, actor="test")  # marks
    collect_garbage(system.context, confirm=True, actor="test")  # sweeps (grace 0)


def test_an_archive_after_a_full_stores_every_chunk_cold_and_the_next_archive_dedups_against_it(
    make_system: Factory, tmp_path: Path
) -> None:
    system = make_system()
    src = make_tree(tmp_path / "src", big_mib=2, small=4)
    system.add_source("docs", src)
    full = system.create_full_backup("docs")
    archive = system.create_archive_backup("docs")

    wanted = file_chunks(system, archive.id)
    assert wanted == file_chunks(system, full.id)
    # nothing deduplicated against the full's standard copies: every file chunk stored again, cold
    assert archive.stats["new_chunks"] >= len(wanted)
    cold, standard = copies(system, wanted, Tier.COLD), copies(system, wanted, Tier.STANDARD)
    assert set(cold) == set(standard) == wanted
    in_storage = tiers_of_packs(system)
    assert {in_storage[p] for p in cold.values()} == {Tier.COLD}
    assert {in_storage[p] for p in standard.values()} == {Tier.STANDARD}
    # the archive's own manifest chunks stay standard
    root = system.context.repository.read_json(Kind.MANIFESTS, archive.id, ObjectType.MANIFEST)
    assert root["backup"]["tier"] == Tier.COLD
    assert {in_storage[c[1]] for c in root["entries"]["chunks"]} == {Tier.STANDARD}

    again = system.create_archive_backup("docs")
    assert file_chunks(system, again.id) == wanted
    assert again.stats["bytes_new"] == 0  # every file chunk found among the cold copies

    # a standard backup never takes the archive as parent, nor dedups against its cold copies
    incremental = system.create_incremental_backup("docs")
    assert incremental.parent_id == full.id
    differential = system.create_differential_backup("docs")
    assert differential.parent_id == full.id
    system.restore(archive.id, tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")


def test_an_archive_first_then_a_full_stores_the_full_standard(make_system: Factory, tmp_path: Path) -> None:
    system = make_system()
    src = make_tree(tmp_path / "src", big_mib=2, small=4)
    system.add_source("docs", src)
    archive = system.create_archive_backup("docs")
    incremental = system.create_incremental_backup("docs")  # an archive is no base: this runs full
    assert incremental.type == "full" and incremental.parent_id is None
    wanted = file_chunks(system, incremental.id)
    assert set(copies(system, wanted, Tier.STANDARD)) == wanted
    assert set(copies(system, wanted, Tier.COLD)) == file_chunks(system, archive.id)


def test_gc_keeps_the_archive_when_the_full_goes_and_the_full_when_the_archive_goes(
    make_system: Factory, tmp_path: Path
) -> None:
    system = make_system(**GRACE_0)
    src = make_tree(tmp_path / "src", big_mib=2, small=4)
    system.add_source("docs", src)
    full = system.create_full_backup("docs")
    archive = system.create_archive_backup("docs")
    wanted = file_chunks(system, archive.id)
    standard_packs = set(copies(system, wanted, Tier.STANDARD).values())
    cold_packs = set(copies(system, wanted, Tier.COLD).values())

    delete_backup(system, full.id)
    collect_twice(system)
    left = tiers_of_packs(system)
    assert not standard_packs & set(left), "the full's standard packs were collected"
    assert cold_packs <= set(left)
    system.restore(archive.id, tmp_path / "archive")
    assert_same_tree(src, tmp_path / "archive")

    # and the other way round: a new full, then the archive deleted
    full = system.create_full_backup("docs")
    standard_packs = set(copies(system, wanted, Tier.STANDARD).values())
    assert standard_packs and not standard_packs & cold_packs
    delete_backup(system, archive.id)
    collect_twice(system)
    left = tiers_of_packs(system)
    assert not cold_packs & set(left), "the archive's cold packs were collected"
    assert Tier.COLD not in left.values()
    assert standard_packs <= set(left)
    system.restore(full.id, tmp_path / "full")
    assert_same_tree(src, tmp_path / "full")


def test_catalog_rebuild_gives_each_copy_its_tier_back(make_system: Factory, tmp_path: Path) -> None:
    system = make_system()
    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    system.add_source("docs", src)
    system.create_full_backup("docs")
    archive = system.create_archive_backup("docs")

    def index() -> set[tuple[str, str, str]]:
        with system.context.sessions() as session:
            chunk_rows = {(c, t, p) for c, t, p in session.execute(select(Chunk.id, Chunk.tier, Chunk.pack_id))}
            pack_tiers = {p: t for p, t in session.execute(select(Pack.id, Pack.tier))}
        assert {pack_tiers[p] for _, t, p in chunk_rows if t == Tier.COLD} == {Tier.COLD}
        return chunk_rows

    before = index()
    assert any(t == Tier.COLD for _, t, _ in before)
    system.rebuild_catalog()
    assert index() == before
    with system.context.sessions() as session:
        cold = session.scalar(select(func.count()).select_from(Pack).where(Pack.tier == Tier.COLD))
    assert cold and cold == len(set(copies(system, file_chunks(system, archive.id), Tier.COLD).values()))
    system.restore(archive.id, tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")

