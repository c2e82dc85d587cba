"""Dedup against the chunk index asked in batches (app/backup/known.py, app/backup/writer.py): a chunk
the index holds is skipped, one it does not hold is stored, repeats within a batch are stored once,
and nothing is ever skipped that is not durably indexed. Real SQLite and PostgreSQL catalogs, local repository."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select

from app.backup import known
from app.backup.claims import SharedClaims
from app.backup.known import KnownChunks, catalog_lookup
from app.backup.unit import pack_recorder
from app.backup.writer import ChunkWriter, DeferredStore
from app.catalog.db import transaction
from app.catalog.models import Chunk
from app.context import Context
from app.system import BackupSystem
from tests.support.system import settings_for


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Context]:
    catalog = request.getfixturevalue("fresh_pg_url") if request.param == "postgres" else None
    system = BackupSystem(settings_for(tmp_path / "home", catalog=catalog), actor="test")
    system.init()
    try:
        yield system.context
    finally:
        known.forget()
        system.close()


def _writer(ctx: Context, known_chunks: KnownChunks, claims: SharedClaims | None = None) -> ChunkWriter:
    return ChunkWriter(
        ctx.repository,
        known_chunks,
        pack_recorder(ctx, "b-test"),
        level=None,
        claim=claims.claim if claims is not None else None,
    )


def _indexed(ctx: Context) -> set[str]:
    with ctx.sessions() as session:
        return set(session.scalars(select(Chunk.id)))


def test_a_chunk_the_index_holds_is_skipped_and_an_absent_one_is_stored(ctx: Context) -> None:
    old, fresh = os.urandom(5000), os.urandom(7000)
    first = _writer(ctx, KnownChunks(catalog_lookup(ctx)))
    old_id, old_new = first.store(old)
    first.flush()
    first.close()
    assert old_new and old_id in _indexed(ctx)

    lookups = KnownChunks(catalog_lookup(ctx))  # an empty cache: the answer comes from the index
    second = _writer(ctx, lookups)
    outcomes = second.store_many([old, fresh])
    second.flush()
    second.close()
    assert outcomes[0] == (old_id, False)
    assert outcomes[1][1] is True
    assert second.stats.new_chunks == 1 and second.stats.bytes_new == len(fresh)
    assert _indexed(ctx) == {old_id, outcomes[1][0]}
    assert lookups.lookups == 1  # both ids in one statement


def test_repeats_within_a_batch_are_stored_once(ctx: Context) -> None:
    piece = os.urandom(9000)
    writer = _writer(ctx, KnownChunks(catalog_lookup(ctx)))
    outcomes = writer.store_many([piece, os.urandom(10), piece, piece])
    writer.flush()
    writer.close()
    assert [new for _id, new in outcomes] == [True, True, False, False]
    assert outcomes[0][0] == outcomes[2][0] == outcomes[3][0]
    assert writer.stats.new_chunks == 2 and writer.stats.chunks == 4
    with ctx.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Chunk)) == 2


def test_a_deferred_batch_of_files_is_looked_up_once_and_counts_new_bytes(ctx: Context) -> None:
    stored_before = os.urandom(3000)
    seed = _writer(ctx, KnownChunks(catalog_lookup(ctx)))
    seed.store(stored_before)
    seed.flush()
    seed.close()

    lookups = KnownChunks(catalog_lookup(ctx))
    writer = _writer(ctx, lookups)
    sink = DeferredStore(writer)
    files = [[memoryview(os.urandom(2000))] for _ in range(20)] + [[memoryview(stored_before)]]
    named = [sink.store_many(f) for f in files]
    assert writer.stats.chunks == 0  # nothing stored before the drain
    assert sink.drain() == 20 * 2000
    writer.flush()
    writer.close()
    assert lookups.lookups == 1
    assert {ids[0][0] for ids in named} == _indexed(ctx)


def test_a_chunk_stored_by_a_concurrent_unit_is_not_stored_again(ctx: Context) -> None:
    """Two units of one backup in one process (separate writers, one KnownChunks): once the first
    unit's pack is indexed, the second names its chunk; while it is not, the second stores its own copy
    (a duplicate, never a skip of something not durable)."""
    shared = known.known_for(ctx, "b-test")
    piece = os.urandom(20000)
    unit_a, unit_b = _writer(ctx, shared), _writer(ctx, shared)
    chunk_id, new_a = unit_a.store(piece)
    assert new_a and chunk_id in unit_a.pending
    assert unit_b.store(piece) == (chunk_id, True)  # A's pack is not durable yet: B may not skip it
    unit_a.flush()
    assert chunk_id not in unit_a.pending and shared.holds(chunk_id)
    unit_c = _writer(ctx, shared)
    assert unit_c.store(piece) == (chunk_id, False)
    for w in (unit_a, unit_b, unit_c):
        w.flush()
        w.close()


def test_a_chunk_claimed_by_another_process_of_the_backup_is_stored_once(ctx: Context) -> None:
    claims = SharedClaims(multiprocessing.get_context("spawn"), 100)
    piece = os.urandom(20000)
    first = _writer(ctx, KnownChunks(catalog_lookup(ctx)), claims)
    second = _writer(ctx, KnownChunks(catalog_lookup(ctx)), claims)
    assert first.store(piece)[1] is True
    assert second.store(piece)[1] is False
    for w in (first, second):
        w.flush()
        w.close()
    assert first.stats.packs == 1 and second.stats.packs == 0


def test_forget_drops_cached_answers_once_the_index_loses_a_chunk(ctx: Context) -> None:
    """A pack check that finds a pack lost takes its chunks out of the index and calls forget: the
    next backup's writer must store such a chunk again, not trust a cached "present"."""
    shared = known.known_for(ctx, "b-test")
    piece = os.urandom(4000)
    writer = _writer(ctx, shared)
    chunk_id, _ = writer.store(piece)
    writer.flush()
    writer.close()
    assert shared.present([chunk_id]) == {chunk_id}
    with transaction(ctx.sessions) as session:
        session.execute(delete(Chunk).where(Chunk.id == chunk_id))
    known.forget()
    again = _writer(ctx, shared)
    assert again.store(piece) == (chunk_id, True)
    again.flush()
    again.close()
    assert chunk_id in _indexed(ctx)


def test_the_cache_is_bounded_and_never_answers_what_the_index_did_not_hold() -> None:
    asked: list[list[str]] = []
    indexed = {f"{n:064x}" for n in range(0, 1000, 2)}

    def lookup(ids: list[str]) -> set[str]:
        asked.append(ids)
        return {i for i in ids if i in indexed}

    cache = KnownChunks(lookup, capacity=100)
    everything = [f"{n:064x}" for n in range(1000)]
    assert cache.present(everything) == indexed
    assert len(cache) == 100
    held = [i for i in everything if cache.holds(i)]
    assert len(held) == 100 and set(held) <= indexed
    asked.clear()
    assert cache.present(held[:10]) == set(held[:10])
    assert asked == []  # answered from the cache
    missing = next(i for i in everything if i not in indexed)
    assert cache.present([missing]) == set() and asked == [[missing]]  # an absent id is asked again


def test_packs_written_into_reused_buffers_each_hold_their_own_chunks(ctx: Context) -> None:
    """The writer seals chunks straight into a pack's buffer and hands an uploaded pack's buffer to a
    later pack: with packs of ~1 MiB, a few dozen packs go through a handful of buffers, and every
    stored chunk (raw and zstd, from many threads) opens from its indexed place to its own bytes."""
    from concurrent.futures import ThreadPoolExecutor

    from app.catalog import chunks

    ctx.repository.pack_target_size = 1 << 20
    writer = ChunkWriter(ctx.repository, KnownChunks(catalog_lookup(ctx)), pack_recorder(ctx, "b-test"), level=3)
    pieces = [os.urandom(300_000) if n % 4 else (b"line %d of text\n" % n) * 20_000 for n in range(120)]
    with ThreadPoolExecutor(4) as pool:
        ids = [chunk_id for chunk_id, _new in pool.map(writer.store, pieces)]
    writer.flush()
    writer.close()
    assert writer.stats.packs >= 20 and writer.stats.new_chunks == 120
    with ctx.sessions() as session:
        places = chunks.locate(session, ids)
    assert set(places) == set(ids)
    for chunk_id, data in zip(ids, pieces, strict=True):
        place = places[chunk_id]
        blob = ctx.repository.read_blob(place.pack_id, place.offset, place.length)
        assert ctx.repository.open_chunk(chunk_id, blob) == data
