"""The data check of one pack: read it once, open every blob the catalog places in it (tag, then the
hash of the plaintext against the chunk id), and compare the pack's own index with the catalog."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from app.errors import EquisplitError, ObjectNotFoundError
from app.repo.format import PACK_TRAILER, Kind
from app.repo.opener import ChunkOpener
from app.repo.pack import parse_trailer
from app.repo.repository import Repository
from app.verify.problems import CHUNK_DAMAGED, PACK_INDEX, PACK_MISSING, Problem
from app.verify.throttle import Bandwidth

#: (chunk id, offset, length, raw length): a chunk as the catalog places it in a pack.
IndexedChunk = tuple[str, int, int, int]


@dataclass
class PackCheck:
    pack_id: str
    outcome: str = "ok"  # ok | damaged | missing
    bytes_read: int = 0
    chunks_read: int = 0
    seconds: float = 0.0
    bad_chunks: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)


def check_pack(
    repo: Repository, pack_id: str, indexed: list[IndexedChunk], bandwidth: Bandwidth
) -> PackCheck:
    started = time.monotonic()
    check = PackCheck(pack_id)
    info = repo.storage.stat(Kind.PACKS, pack_id)
    if info is None:
        return _missing(check, indexed, started)
    bandwidth.take(info.size)
    try:
        data = memoryview(repo.storage.get(Kind.PACKS, pack_id))
    except ObjectNotFoundError:  # deleted between the stat and the read
        return _missing(check, indexed, started)
    check.bytes_read = len(data)
    open_chunk = ChunkOpener(repo).open  # the checks of repo.open_chunk, less Python a chunk (32 a MiB for PostgreSQL)
    for chunk_id, offset, length, raw_length in indexed:
        check.chunks_read += 1
        if offset + length > len(data):
            _damaged(
                check, chunk_id, f"its blob at {offset}+{length} lies past the pack's end ({len(data)} bytes)"
            )
            continue
        try:
            open_chunk(chunk_id, data[offset : offset + length], raw_length)
        except EquisplitError as exc:
            _damaged(check, chunk_id, exc.message)
    index_problem = _compare_index(repo, pack_id, data, indexed)
    if index_problem is not None:
        check.problems.append(index_problem)
    if check.problems:
        check.outcome = "damaged"
    check.seconds = time.monotonic() - started
    return check


def _missing(check: PackCheck, indexed: list[IndexedChunk], started: float) -> PackCheck:
    check.outcome = "missing"
    check.bad_chunks = {chunk_id for chunk_id, *_ in indexed}
    check.problems.append(Problem(PACK_MISSING, f"packs/{check.pack_id}", "the pack is not in storage"))
    check.seconds = time.monotonic() - started
    return check


def _damaged(check: PackCheck, chunk_id: str, why: str) -> None:
    check.bad_chunks.add(chunk_id)
    check.problems.append(
        Problem(CHUNK_DAMAGED, f"packs/{check.pack_id}", f"chunk {chunk_id} is damaged: {why}")
    )


def _compare_index(
    repo: Repository, pack_id: str, data: memoryview, indexed: list[IndexedChunk]
) -> Problem | None:
    """None if the pack's own index opens and places every indexed chunk where the catalog does."""
    try:
        if len(data) < PACK_TRAILER:
            raise ValueError(f"the pack is {len(data)} bytes, shorter than its trailer")
        index_len = parse_trailer(bytes(data[-PACK_TRAILER:]), pack_id)
        start = len(data) - PACK_TRAILER - index_len
        if start < 0:
            raise ValueError(f"its index length {index_len} exceeds the pack")
        entries = repo.open_pack_index(pack_id, data[start : len(data) - PACK_TRAILER])
    except (EquisplitError, ValueError) as exc:
        why = exc.message if isinstance(exc, EquisplitError) else str(exc)
        return Problem(PACK_INDEX, f"packs/{pack_id}", f"the pack's index cannot be read: {why}")
    own = {e.chunk_id: (e.offset, e.length, e.raw_length) for e in entries}
    differing = [c for c, offset, length, raw in indexed if own.get(c) != (offset, length, raw)]
    if differing:
        return Problem(
            PACK_INDEX,
            f"packs/{pack_id}",
            f"the pack's index disagrees with the catalog on {len(differing)} chunk(s), e.g. {differing[0]}",
        )
    return None
