"""Fetch (docs/WAL.md section 4): verified bytes; a quiet miss at the end; a loud hole; the spool."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.context import Context
from app.errors import IntegrityError, WalError, WalNotFoundError
from app.repo.format import Kind
from app.wal import names
from app.wal.fetch import fetch
from app.wal.push import push
from app.wal.spool import Spool, default_root
from tests.unit.wal.conftest import SOURCE, WriteSegment, make_segment


@pytest.fixture
def archived(ctx: Context, write_segment: WriteSegment) -> list[str]:
    """Segments 3 to 6 of timeline 1 in the archive."""
    paths = [write_segment(segno) for segno in range(3, 7)]
    for path in paths:
        push(ctx, SOURCE, path, lookahead=0)
    return [path.name for path in paths]


def test_fetch_writes_the_verified_file(ctx: Context, archived: list[str], tmp_path: Path) -> None:
    dest = tmp_path / "RECOVERYXLOG"
    result = fetch(ctx.repository, SOURCE, archived[1], dest, prefetch=0)
    assert (
        dest.read_bytes() == make_segment(4) and not result.from_spool and result.size == len(make_segment(4))
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


@pytest.mark.parametrize("name", ["000000010000000000000007", "00000002.history", "000000020000000000000004"])
def test_past_the_end_or_a_probe_is_not_found(
    ctx: Context, archived: list[str], tmp_path: Path, name: str
) -> None:
    with pytest.raises(WalNotFoundError):
        fetch(ctx.repository, SOURCE, name, tmp_path / "X", prefetch=0)
    assert not (tmp_path / "X").exists()


def test_a_hole_in_the_archive_is_loud(ctx: Context, archived: list[str], tmp_path: Path) -> None:
    ctx.storage.delete(Kind.WAL, names.object_name(SOURCE, archived[1]))
    with pytest.raises(WalError, match=f"{archived[1]} of source {SOURCE} is missing") as caught:
        fetch(ctx.repository, SOURCE, archived[1], tmp_path / "X", prefetch=0)
    assert not isinstance(caught.value, WalNotFoundError)
    assert archived[2] in caught.value.message


def test_a_hole_before_a_log_boundary_is_found_in_the_next_log(
    ctx: Context, write_segment: WriteSegment, tmp_path: Path
) -> None:
    per_log = names.segments_per_log(1 << 20)
    for segno in (per_log - 2, per_log - 1, per_log, per_log + 1):
        push(ctx, SOURCE, write_segment(segno), lookahead=0)
    first_of_log = names.segment_name(1, per_log, 1 << 20)
    ctx.storage.delete(Kind.WAL, names.object_name(SOURCE, first_of_log))
    with pytest.raises(WalError, match="missing"):
        fetch(ctx.repository, SOURCE, first_of_log, tmp_path / "X", prefetch=0)


def test_a_damaged_object_is_an_integrity_error_naming_it(
    ctx: Context, archived: list[str], tmp_path: Path
) -> None:
    object_name = names.object_name(SOURCE, archived[0])
    blob = bytearray(ctx.storage.get(Kind.WAL, object_name))
    blob[len(blob) // 2] ^= 0x40
    ctx.storage.put(Kind.WAL, object_name, bytes(blob))
    with pytest.raises(IntegrityError, match=archived[0]):
        fetch(ctx.repository, SOURCE, archived[0], tmp_path / "X", prefetch=0)


def test_a_spooled_segment_is_served_from_the_spool_and_a_bad_one_is_refetched(
    ctx: Context, archived: list[str], tmp_path: Path
) -> None:
    dest = tmp_path / "RECOVERYXLOG"
    spool = Spool(default_root(dest), SOURCE)
    spool.dir.mkdir(parents=True)
    spool.write(archived[2], lambda: make_segment(5))
    result = fetch(ctx.repository, SOURCE, archived[2], dest, prefetch=0)
    assert result.from_spool and dest.read_bytes() == make_segment(5) and spool.spooled() == {}

    spool.write(archived[3], lambda: make_segment(6))
    damaged = spool.spooled()[archived[3]]
    damaged.write_bytes(b"torn")
    result = fetch(ctx.repository, SOURCE, archived[3], dest, prefetch=0)
    assert not result.from_spool and dest.read_bytes() == make_segment(6) and spool.spooled() == {}
