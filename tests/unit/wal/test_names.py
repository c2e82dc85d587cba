"""WAL file names (docs/WAL.md section 1): the four kinds, positions, and object names."""

from __future__ import annotations

import pytest

from app.errors import WalError
from app.wal import names

MiB = 1 << 20


def test_the_four_kinds_parse_with_their_timeline_and_position() -> None:
    seg = names.parse("0000000200000001000000FE")
    assert (seg.kind, seg.timeline, seg.log, seg.seg) == (names.SEGMENT, 2, 1, 0xFE)
    partial = names.parse("000000010000000000000003.partial")
    assert (partial.kind, partial.segment_name) == (names.PARTIAL, "000000010000000000000003")
    history = names.parse("0000000A.history")
    assert (history.kind, history.timeline, history.segment_name) == (names.HISTORY, 10, None)
    backup = names.parse("000000010000000000000002.00000028.backup")
    assert (backup.kind, backup.log, backup.seg) == (names.BACKUP, 0, 2)


@pytest.mark.parametrize(
    "bad",
    ["", "RECOVERYXLOG", "00000001000000000000000g", "000000010000000000000001.ready", "1.history", "x/y"],
)
def test_anything_else_is_refused(bad: str) -> None:
    with pytest.raises(WalError, match="not a WAL file name"):
        names.parse(bad)
    assert not names.is_wal_name(bad)


@pytest.mark.parametrize(("size", "last"), [(16 * MiB, 0xFF), (MiB, 0xFFF)])
def test_segment_numbers_roll_over_the_log_word_by_segment_size(size: int, last: int) -> None:
    end_of_log = names.parse(f"00000001{0:08X}{last:08X}")
    segno = end_of_log.segno(size)
    assert segno == last
    assert names.segment_name(1, segno + 1, size) == "000000010000000100000000"
    assert names.following(end_of_log, size, 2) == ["000000010000000100000000", "000000010000000100000001"]


def test_a_name_beyond_the_segment_size_is_refused() -> None:
    with pytest.raises(WalError, match="16 MiB segments"):
        names.parse("000000010000000000000100").segno(16 * MiB)
    with pytest.raises(WalError, match="not a WAL segment size"):
        names.segments_per_log(3 * MiB)


def test_object_names_split_at_the_last_dash() -> None:
    assert names.object_name("db-1", "000000010000000000000003") == "db-1-000000010000000000000003"
    assert names.split_object_name("db-1-000000010000000000000003") == ("db-1", "000000010000000000000003")
    assert names.split_object_name("db-1-00000002.history") == ("db-1", "00000002.history")
    assert names.split_object_name("000000010000000000000003") is None
    assert names.split_object_name("db-notwal") is None
    assert names.timeline_prefix("db-1", 2) == "db-1-00000002"
