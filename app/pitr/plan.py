"""The recovery plan (docs/PITR.md section 2), computed from catalog facts alone, so it is pure and
testable: which base backup, which timelines, every WAL segment from the backup's start to the target,
their bytes and a time estimate. A target that cannot be reached is refused here, naming why."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app import clock
from app.errors import RecoveryError
from app.pitr.history import TimelineSpan, newest_timeline, path_to
from app.pitr.target import LATEST, LSN, TIME, RecoveryTarget
from app.wal import lsn, names

#: Rough rates for the estimate, measured on a 2-core machine (docs/PITR.md section 6): restore of the
#: base backup from local storage, replay including one `wal fetch` per segment, and server start-up.
RESTORE_BYTES_PER_SECOND = 60e6
REPLAY_BYTES_PER_SECOND = 25e6
FIXED_SECONDS = 4.0


@dataclass(frozen=True)
class BaseBackup:
    """A complete PostgreSQL base backup, as the catalog records it."""

    id: str
    type: str
    timeline: int
    start_lsn: int
    stop_lsn: int
    started_at: datetime
    stopped_at: datetime
    bytes: int


@dataclass(frozen=True)
class ArchivedSegment:
    name: str
    timeline: int
    segno: int
    size: int
    stored_size: int
    written_at: datetime | None


@dataclass
class RecoveryPlan:
    source: str
    target: RecoveryTarget
    backup: BaseBackup
    timeline: int
    timelines: list[TimelineSpan]
    segments: list[str]
    history_files: list[str]
    wal_bytes: int
    wal_stored_bytes: int
    restore_bytes: int
    estimated_seconds: float
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target.to_json(),
            "backup": {
                "id": self.backup.id,
                "type": self.backup.type,
                "timeline": self.backup.timeline,
                "start_lsn": lsn.format_lsn(self.backup.start_lsn),
                "stop_lsn": lsn.format_lsn(self.backup.stop_lsn),
                "stopped_at": clock.iso(self.backup.stopped_at),
                "bytes": self.backup.bytes,
            },
            "timeline": self.timeline,
            "timelines": [
                {
                    "timeline": s.timeline,
                    "begin": lsn.format_lsn(s.begin),
                    "end": None if s.end is None else lsn.format_lsn(s.end),
                }
                for s in self.timelines
            ],
            "segments": len(self.segments),
            "first_segment": self.segments[0] if self.segments else None,
            "last_segment": self.segments[-1] if self.segments else None,
            "history_files": self.history_files,
            "wal_bytes": self.wal_bytes,
            "wal_stored_bytes": self.wal_stored_bytes,
            "restore_bytes": self.restore_bytes,
            "estimated_seconds": round(self.estimated_seconds, 1),
            "warnings": self.warnings,
            "problems": self.problems,
        }


def estimate_seconds(restore_bytes: int, wal_bytes: int) -> float:
    return FIXED_SECONDS + restore_bytes / RESTORE_BYTES_PER_SECOND + wal_bytes / REPLAY_BYTES_PER_SECOND


def _timeline_of(segno: int, spans: list[TimelineSpan], segment_size: int) -> int:
    """The timeline whose file PostgreSQL reads for segment `segno`: the newest one begun by then (the
    segment holding a switch point is read from the new timeline's copy)."""
    chosen = spans[0].timeline
    for span in spans:
        if lsn.segno_of(span.begin, segment_size) <= segno:
            chosen = span.timeline
    return chosen


def _usable(backup: BaseBackup, spans: list[TimelineSpan]) -> bool:
    """Whether recovery along `spans` can start from `backup`: its timeline is on the path and did not
    branch off before the backup was consistent."""
    for span in spans:
        if span.timeline == backup.timeline:
            return span.end is None or span.end >= backup.stop_lsn
    return False


def choose_backup(
    target: RecoveryTarget,
    backups: list[BaseBackup],
    histories: dict[int, list[tuple[int, int]]],
    backup_id: str | None = None,
) -> BaseBackup:
    """The newest backup that ended before the target (for a time or WAL position) on a timeline the
    recovery can follow; `backup_id` to insist on one."""
    if not backups:
        raise RecoveryError(
            "the source has no complete PostgreSQL base backup",
            hint="take one: `equisplit-dr backup run --source NAME --type full`",
        )
    ordered = sorted(backups, key=lambda b: (b.stopped_at, b.stop_lsn), reverse=True)
    if backup_id is not None:
        ordered = [b for b in ordered if b.id == backup_id]
        if not ordered:
            raise RecoveryError(
                f"backup {backup_id} is not a complete base backup of this source",
                hint="list them with `equisplit-dr backup list --source NAME`",
            )

    def ended_before(b: BaseBackup) -> bool:
        if target.kind == TIME:
            assert target.time is not None
            return b.stopped_at <= target.time
        if target.kind == LSN:
            assert target.lsn is not None
            return b.stop_lsn <= target.lsn
        return True

    early = [b for b in ordered if ended_before(b)]
    if not early:
        oldest = min(ordered, key=lambda b: b.stopped_at)
        what = (
            f"ended at {clock.iso(oldest.stopped_at)}"
            if target.kind == TIME
            else f"ended at WAL position {lsn.format_lsn(oldest.stop_lsn)}"
        )
        chosen = "the chosen backup" if backup_id else "the oldest base backup"
        raise RecoveryError(
            f"the target {target.describe()} is before the end of {chosen} ({oldest.id}, which {what}): "
            "no backup can be recovered to it",
            hint="pick a later target" if backup_id else "pick a later target; nothing older is kept",
        )
    for b in early:
        if _usable(b, path_to(newest_timeline(b.timeline, histories), histories)):
            return b
    raise RecoveryError(
        f"no base backup before {target.describe()} lies on the timeline recovery would follow "
        f"(timeline {newest_timeline(early[0].timeline, histories)})",
        hint="a later timeline branched off before those backups were consistent: take a new base backup",
    )


def make_plan(
    source: str,
    target: RecoveryTarget,
    backups: list[BaseBackup],
    segments: list[ArchivedSegment],
    histories: dict[int, list[tuple[int, int]]],
    segment_size: int,
    *,
    backup_id: str | None = None,
) -> RecoveryPlan:
    """The plan to reach `target`; RecoveryError naming why if it cannot be reached from the archive."""
    backup = choose_backup(target, backups, histories, backup_id)
    timeline = newest_timeline(backup.timeline, histories)
    spans = [s for s in path_to(timeline, histories) if s.end is None or s.end > backup.start_lsn]
    by_position = {(s.timeline, s.segno): s for s in segments}
    newest_segno = {
        tli: max(s.segno for s in segments if s.timeline == tli) for tli in {s.timeline for s in segments}
    }
    warnings: list[str] = []
    needed: list[ArchivedSegment] = []
    consistent_segno = lsn.segno_before(backup.stop_lsn, segment_size)
    target_segno = (
        lsn.segno_of(target.lsn, segment_size) if target.kind == LSN and target.lsn is not None else None
    )
    segno = lsn.segno_of(backup.start_lsn, segment_size)
    while True:
        tli = _timeline_of(segno, spans, segment_size)
        found = by_position.get((tli, segno))
        name = names.segment_name(tli, segno, segment_size)
        if found is None:
            later = _next_archived(segno, spans, by_position, newest_segno, segment_size)
            if segno <= consistent_segno:
                raise RecoveryError(
                    f"WAL segment {name}, which base backup {backup.id} needs to become consistent, is not "
                    "archived",
                    hint="the backup cannot be used: pick another with --backup, or push the segment "
                    "(`equisplit-dr wal push`) if a copy exists",
                )
            if target.kind in (TIME, LSN):
                if later is not None:
                    gap_last = names.segment_name(later.timeline, later.segno - 1, segment_size)
                    before = needed[-1].written_at if needed else None
                    raise RecoveryError(
                        f"the target {target.describe()} lies in a WAL gap: segments {name} to {gap_last} are "
                        f"not archived (the archived WAL before the gap ends at {clock.iso(before)}, and "
                        f"resumes with {later.name})",
                        hint="recover to a point before the gap, or push the missing segments if a copy "
                        "exists (`equisplit-dr wal status` lists every gap)",
                    )
                newest = needed[-1] if needed else None
                raise RecoveryError(
                    f"the target {target.describe()} is after the newest archived WAL of source {source} "
                    f"(segment {newest.name if newest else '-'}, written at "
                    f"{clock.iso(newest.written_at) if newest else '-'})",
                    hint="its WAL is not archived yet: wait for the next segment (or run "
                    "SELECT pg_switch_wal() on the server), or choose an earlier target",
                )
            if later is not None:
                gap = (
                    f"segments {name} to {names.segment_name(later.timeline, later.segno - 1, segment_size)}"
                )
                if target.kind == LATEST:
                    raise RecoveryError(
                        f"the archived WAL of source {source} has a gap ({gap} are missing): recovery to the "
                        "latest point cannot pass it",
                        hint="recover to a time before the gap (--timestamp), or push the missing segments",
                    )
                warnings.append(
                    f"the archive has a gap ({gap} missing): if {target.describe()} lies after it, "
                    "recovery fails"
                )
            break
        needed.append(found)
        if segno >= consistent_segno:
            if target.kind == TIME:
                assert target.time is not None
                if found.written_at is not None and clock.as_utc(found.written_at) > target.time:
                    break  # holds the first record after the target: replay stops in it
            elif target_segno is not None and segno >= target_segno:
                break
        segno += 1
    # `latest` reads the newest timeline's history and probes each one from the backup's up to it.
    histories_needed = [f"{t:08X}.history" for t in range(backup.timeline + 1, timeline + 1)]
    wal_bytes = sum(s.size for s in needed)
    if target.kind not in (TIME, LSN, LATEST):
        warnings.append(
            f"whether {target.describe()} lies in the archived WAL is known only once replay finds it: "
            "the recovery fails if it does not"
        )
    return RecoveryPlan(
        source=source,
        target=target,
        backup=backup,
        timeline=timeline,
        timelines=spans,
        segments=[s.name for s in needed],
        history_files=histories_needed,
        wal_bytes=wal_bytes,
        wal_stored_bytes=sum(s.stored_size for s in needed),
        restore_bytes=backup.bytes,
        estimated_seconds=estimate_seconds(backup.bytes, wal_bytes),
        warnings=warnings,
    )


def _next_archived(
    segno: int,
    spans: list[TimelineSpan],
    by_position: dict[tuple[int, int], ArchivedSegment],
    newest_segno: dict[int, int],
    segment_size: int,
) -> ArchivedSegment | None:
    """The first archived segment after `segno` along the path, if any (then `segno` starts a gap)."""
    last = max((newest_segno.get(span.timeline, -1) for span in spans), default=-1)
    for later in range(segno + 1, last + 1):
        found = by_position.get((_timeline_of(later, spans, segment_size), later))
        if found is not None:
            return found
    return None
