"""`catalog rebuild` is bounded by batches, not by the repository (issue #14; DESIGN invariant 11): its
memory is the same for a repository four times the size (tracemalloc's peak over the rebuild), and its
catalog statements are one batch's, not two per pack."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest
from sqlalchemy import event

from app.catalog import rebuild
from app.catalog.db import transaction
from app.repo.pack import PackBuilder
from app.system import BackupSystem
from tests.support.system import Factory

CHUNKS_PER_PACK = 50
#: Holding the bigger repository's indexes at once costs ~1.4 MB more here (6,000 extra PackEntry
#: objects alone); run-to-run noise of the same rebuild is tens of KB.
MARGIN_BYTES = 512 << 10


def _add_packs(system: BackupSystem, count: int) -> None:
    """`count` packs of CHUNKS_PER_PACK tiny synthetic chunks, straight into storage (only their own
    indexes are read by a rebuild)."""
    repo = system.context.repository
    for _ in range(count):
        builder = PackBuilder()
        for _ in range(CHUNKS_PER_PACK):
            builder.add(os.urandom(32).hex(), b"blob", 4)
        pack_id = os.urandom(32).hex()
        repo.put_pack(pack_id, repo.finish_pack(pack_id, builder))


def _rebuild_peak(system: BackupSystem) -> tuple[int, int]:
    """(tracemalloc's peak bytes during the rebuild, packs indexed)."""
    tracemalloc.start()
    try:
        with transaction(system.context.sessions) as session:
            report = rebuild.rebuild_catalog(session, system.context.repository)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, report.packs


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches small enough that both repositories span many of them."""
    monkeypatch.setattr(rebuild, "INSERT_PACKS", 16)
    monkeypatch.setattr(rebuild, "INSERT_CHUNKS", 2000)


@pytest.mark.usefixtures("small_batches")
def test_rebuild_memory_does_not_grow_with_the_repository(make_system: Factory) -> None:
    system = make_system()
    _add_packs(system, 40)
    _rebuild_peak(system)  # first use: the ORM, statement caches and imports, outside the figure
    small, packs = _rebuild_peak(system)
    assert packs == 40
    _add_packs(system, 120)
    big, packs = _rebuild_peak(system)
    assert packs == 160
    assert big - small < MARGIN_BYTES, f"peak {small:,} B with 40 packs, {big:,} B with 160"


@pytest.mark.usefixtures("small_batches")
def test_rebuild_inserts_packs_in_batches(make_system: Factory) -> None:
    """160 packs (8,000 chunks) in 10 batches of 16: a statement for their pack rows and one for their
    800 chunk rows: ~20, where two per pack were 320."""
    system = make_system()
    _add_packs(system, 160)
    inserts: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO") and (
            " packs " in statement or " chunks " in statement
        ):
            inserts.append(statement)

    event.listen(system.context.engine, "before_cursor_execute", count)
    try:
        _peak, packs = _rebuild_peak(system)
    finally:
        event.remove(system.context.engine, "before_cursor_execute", count)
    with system.context.sessions() as session:
        from sqlalchemy import func, select

        from app.catalog.models import Chunk

        assert session.scalar(select(func.count()).select_from(Chunk)) == 160 * CHUNKS_PER_PACK
    assert packs == 160
    assert len(inserts) <= 30, f"{len(inserts)} insert statements for 160 packs"


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_packs_holding_spans_batches(
    make_system: Factory, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """The pack check's lookup (`chunks.packs_holding`, finalize) over more ids than a statement takes:
    every pack found once, every known id counted, unknown ids not."""
    from app.catalog import chunks
    from app.repo.pack import PackEntry

    catalog = request.getfixturevalue("fresh_pg_url") if backend == "postgres" else None
    system = make_system(catalog=catalog)
    monkeypatch.setattr(chunks, "LOOKUP_BATCH", 7)
    monkeypatch.setattr(chunks, "PG_PACKS_BATCH", 7)
    packs = {os.urandom(32).hex(): [os.urandom(32).hex() for _ in range(10)] for _ in range(3)}
    with transaction(system.context.sessions) as session:
        chunks.record_packs(
            session, [(p, 1, [PackEntry(c, 0, 1, 1) for c in ids]) for p, ids in packs.items()], None
        )
    asked = [c for ids in list(packs.values())[:2] for c in ids] + [os.urandom(32).hex() for _ in range(5)]
    with system.context.sessions() as session:
        found, known = chunks.packs_holding(session.connection(), asked)
    assert found == set(list(packs)[:2]) and known == 20


@pytest.mark.postgres
def test_packs_holding_finds_ids_the_joined_form_cannot_carry(make_system: Factory, request: pytest.FixtureRequest) -> None:
    """On PostgreSQL the ids go to the server as one comma-joined string: a batch holding an id with a
    comma in it, or one empty id, goes as an array instead, and every id is still found."""
    from app.catalog import chunks
    from app.repo.pack import PackEntry

    system = make_system(catalog=request.getfixturevalue("fresh_pg_url"))
    odd, plain = ["a,b", ""], [os.urandom(32).hex() for _ in range(3)]
    pack = os.urandom(32).hex()
    with transaction(system.context.sessions) as session:
        chunks.record_packs(session, [(pack, 1, [PackEntry(c, 0, 1, 1) for c in odd + plain])], None)
    with system.context.sessions() as session:
        conn = session.connection()
        assert chunks.packs_holding(conn, plain) == ({pack}, 3)
        assert chunks.packs_holding(conn, ["a,b", *plain]) == ({pack}, 4)
        assert chunks.packs_holding(conn, [""]) == ({pack}, 1)


def test_rebuild_reads_the_same_index_back(system_any_backend: BackupSystem, tmp_path: Path) -> None:
    """On SQLite + local storage and PostgreSQL + S3 (moto): the index a rebuild reads back from the packs
    (8 at once, in batches) is the one the backups recorded, row for row."""
    from sqlalchemy import select

    from app.catalog.models import Chunk, Pack
    from tests.support.trees import make_tree

    system = system_any_backend
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=1, small=30))
    system.create_full_backup("docs")

    def index() -> tuple[list[object], list[object]]:
        with system.context.sessions() as session:
            packs = session.execute(select(Pack.id, Pack.size, Pack.chunk_count).order_by(Pack.id)).all()
            rows = session.execute(
                select(Chunk.id, Chunk.pack_id, Chunk.offset, Chunk.length, Chunk.raw_length).order_by(
                    Chunk.id
                )
            ).all()
        return list(packs), list(rows)

    recorded = index()
    report = system.rebuild_catalog()
    assert index() == recorded
    assert report.packs == len(recorded[0]) and report.chunks == len(recorded[1]) and report.unreadable == []
