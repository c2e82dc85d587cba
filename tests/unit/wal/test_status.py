"""Status (docs/WAL.md sections 5 and 6): ranges and gaps per timeline, and the achieved RPO."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.catalog.models import WalArchive, WalSegment
from app.wal import names
from app.wal.status import SegmentRange, compute_status, runs

MiB = 1 << 20
NOW = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)


def row(name: str, segment_size: int = MiB) -> WalSegment:
    wal = names.parse(name)
    return WalSegment(
        source_id=1,
        name=name,
        kind=wal.kind,
        timeline=wal.timeline,
        segno=wal.segno(segment_size),
        size=segment_size,
        stored_size=1,
        content_hash="0" * 64,
        key_id="0" * 32,
        written_at=NOW,
        archived_at=NOW,
    )


def test_runs_and_holes() -> None:
    assert runs([]) == ([], [])
    assert runs([5, 3, 4, 4, 9, 10, 12]) == ([(3, 5), (9, 10), (12, 12)], [(6, 8), (11, 11)])


def test_ranges_and_gaps_per_timeline_with_partial_and_history() -> None:
    rows = [
        row("000000010000000000000001"),
        row("000000010000000000000002"),
        row("000000010000000000000004"),
        row("000000010000000000000005.partial"),
        row("00000002.history"),
        row("000000020000000000000005"),
        row("000000020000000000000006"),
    ]
    archive = WalArchive(
        source_id=1,
        segment_size=MiB,
        system_identifier="1",
        newest_segment="000000020000000000000006",
        newest_record_at=NOW - timedelta(seconds=90),
        last_archived_at=NOW,
    )
    status = compute_status("db", archive, rows, now=NOW, since=None, max_data_loss_seconds=60)
    one, two = status.timelines
    assert one.ranges == [
        SegmentRange("000000010000000000000001", "000000010000000000000002", 2),
        SegmentRange("000000010000000000000004", "000000010000000000000004", 1),
    ]
    assert one.gaps == [SegmentRange("000000010000000000000003", "000000010000000000000003", 1)]
    assert one.partial == ["000000010000000000000005.partial"]
    assert two.ranges == [SegmentRange("000000020000000000000005", "000000020000000000000006", 2)]
    assert two.gaps == [] and status.history == ["00000002.history"] and status.gap_count == 1
    assert status.rpo_seconds == 90.0 and status.rpo_exceeded
    assert status.to_json()["gaps"] == 1


def test_an_empty_archive_has_no_rpo_and_counts_as_exceeded() -> None:
    status = compute_status("db", None, [], now=NOW, since=NOW, max_data_loss_seconds=60)
    assert status.timelines == [] and status.rpo_seconds is None and status.rpo_exceeded
    assert status.since == "2026-11-27T04:00:00.000000Z"
