"""The recovery plan (docs/PITR.md section 2): backup choice, WAL ranges per timeline, refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.errors import EquisplitError, RecoveryError
from app.pitr.history import newest_timeline, parse_history, path_to
from app.pitr.plan import ArchivedSegment, BaseBackup, make_plan
from app.pitr.target import RecoveryTarget, parse_target
from app.wal import lsn, names

MiB = 1 << 20
T0 = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def backup(id_: str, start_seg: int, stop_seg: int, stopped: float, timeline: int = 1) -> BaseBackup:
    return BaseBackup(
        id=id_,
        type="full",
        timeline=timeline,
        start_lsn=start_seg * MiB + 0x28,
        stop_lsn=stop_seg * MiB + 0x100,
        started_at=at(stopped - 5),
        stopped_at=at(stopped),
        bytes=100 * MiB,
    )


def seg(timeline: int, segno: int, written: float) -> ArchivedSegment:
    return ArchivedSegment(
        names.segment_name(timeline, segno, MiB), timeline, segno, MiB, MiB // 5, at(written)
    )


def archive(*spec: tuple[int, int, float]) -> list[ArchivedSegment]:
    return [seg(t, s, w) for t, s, w in spec]


WAL = archive(*((1, n, 10.0 * n) for n in range(2, 12)))  # segments 2..11, segment n written at 10 n s
BACKUPS = [backup("b-old", 2, 3, 31), backup("b-new", 6, 6, 61)]


def time_target(seconds: float) -> RecoveryTarget:
    return RecoveryTarget("time", time=at(seconds))


def test_picks_the_newest_backup_that_ended_before_the_target_and_the_segments_through_it() -> None:
    plan = make_plan("db", time_target(75), BACKUPS, WAL, {}, MiB)
    assert plan.backup.id == "b-new"
    # from the backup's start segment (6) through the first segment written after the target (8)
    assert plan.segments == [names.segment_name(1, n, MiB) for n in (6, 7, 8)]
    assert plan.wal_bytes == 3 * MiB and plan.wal_stored_bytes == 3 * (MiB // 5)
    assert plan.estimated_seconds > 0 and plan.history_files == []
    earlier = make_plan("db", time_target(45), BACKUPS, WAL, {}, MiB)
    assert earlier.backup.id == "b-old" and earlier.segments[0] == names.segment_name(1, 2, MiB)
    chosen = make_plan("db", time_target(75), BACKUPS, WAL, {}, MiB, backup_id="b-old")
    assert chosen.backup.id == "b-old" and len(chosen.segments) == 7


def test_refuses_a_target_before_the_oldest_backup_or_after_the_newest_wal() -> None:
    with pytest.raises(RecoveryError, match=r"before the end of the oldest base backup \(b-old"):
        make_plan("db", time_target(20), BACKUPS, WAL, {}, MiB)
    with pytest.raises(RecoveryError, match="after the newest archived WAL"):
        make_plan("db", time_target(500), BACKUPS, WAL, {}, MiB)
    with pytest.raises(RecoveryError, match="no complete PostgreSQL base backup"):
        make_plan("db", time_target(75), [], WAL, {}, MiB)
    with pytest.raises(RecoveryError, match="before the end of the chosen backup"):
        make_plan("db", time_target(45), BACKUPS, WAL, {}, MiB, backup_id="b-new")


def test_refuses_a_target_in_or_past_a_gap_and_latest_across_one() -> None:
    holed = [s for s in WAL if s.segno not in (8, 9)]
    with pytest.raises(
        RecoveryError,
        match="lies in a WAL gap: segments 000000010000000000000008 to 000000010000000000000009",
    ):
        make_plan("db", time_target(75), BACKUPS, holed, {}, MiB)
    with pytest.raises(RecoveryError, match="lies in a WAL gap"):
        make_plan("db", time_target(105), BACKUPS, holed, {}, MiB)
    assert make_plan("db", time_target(65), BACKUPS, holed, {}, MiB).segments[-1].endswith("07")
    with pytest.raises(RecoveryError, match="has a gap"):
        make_plan("db", RecoveryTarget("latest"), BACKUPS, holed, {}, MiB)
    named = make_plan("db", RecoveryTarget("name", name="x"), BACKUPS, holed, {}, MiB)
    assert any("gap" in w for w in named.warnings) and named.segments[-1].endswith("07")
    inside = [s for s in WAL if s.segno != 6]
    with pytest.raises(RecoveryError, match="needs to become consistent"):
        make_plan("db", time_target(75), BACKUPS, inside, {}, MiB)


def test_lsn_and_latest_targets() -> None:
    plan = make_plan("db", RecoveryTarget("lsn", lsn=9 * MiB + 5), BACKUPS, WAL, {}, MiB)
    assert plan.backup.id == "b-new" and plan.segments[-1] == names.segment_name(1, 9, MiB)
    latest = make_plan("db", RecoveryTarget("latest"), BACKUPS, WAL, {}, MiB)
    assert latest.segments[-1] == names.segment_name(1, 11, MiB)


def test_follows_the_newest_timeline_through_its_switch_point() -> None:
    history = {2: parse_history(2, "1\t0/800100\tno recovery target specified\n")}
    assert newest_timeline(1, history) == 2
    assert [(s.timeline, s.begin, s.end) for s in path_to(2, history)] == [
        (1, 0, 8 * MiB + 0x100),
        (2, 8 * MiB + 0x100, None),
    ]
    wal = archive(*((1, n, 10.0 * n) for n in range(2, 10)), *((2, n, 10.0 * n + 5) for n in range(8, 12)))
    plan = make_plan("db", time_target(100), BACKUPS, wal, history, MiB)
    assert plan.timeline == 2 and plan.history_files == ["00000002.history"]
    # timeline 1 up to the segment before the switch; the switch segment is read from timeline 2's copy
    assert plan.segments == [names.segment_name(1, 6, MiB), names.segment_name(1, 7, MiB)] + [
        names.segment_name(2, n, MiB) for n in (8, 9, 10)
    ]
    # A backup on timeline 1 that ended after timeline 2 branched off cannot be recovered along it.
    late = [backup("b-late", 9, 9, 95)]
    with pytest.raises(RecoveryError, match="lies on the timeline"):
        make_plan("db", time_target(110), late, wal, history, MiB)


def test_history_and_targets_parse() -> None:
    text = '# comment\n1\t0/300000\tno recovery target specified\n\n2\t0/500028\tat restore point "x"\n'
    assert parse_history(3, text) == [(1, 3 * MiB), (2, 5 * MiB + 0x28)]
    assert newest_timeline(1, {2: [], 3: [], 5: []}) == 3  # PostgreSQL stops probing at the first gap
    assert lsn.format_lsn(lsn.parse("16/B374D848")) == "16/B374D848"
    assert parse_target(timestamp="latest").kind == "latest"
    target = parse_target(timestamp="2026-11-27T04:00:01Z")
    assert target.time == at(1) and target.settings() == {
        "recovery_target_time": "2026-11-27 04:00:01.000000+00"
    }
    assert parse_target(wal_position="0/3000000").settings() == {"recovery_target_lsn": "0/3000000"}
    assert parse_target(xid="1234").settings() == {"recovery_target_xid": "1234"}
    assert parse_target(name="before-upgrade").settings() == {"recovery_target_name": "before-upgrade"}
    for bad in ({}, {"timestamp": "latest", "xid": "1"}, {"xid": "abc"}, {"timestamp": "24h"}):
        with pytest.raises(EquisplitError):
            parse_target(**bad)  # type: ignore[arg-type]
