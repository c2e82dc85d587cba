"""Status (docs/WAL.md sections 5 and 6): a source's archived ranges and gaps per timeline, and the
achieved RPO. The computations are pure; `wal_status` reads the catalog and the clock once."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any

from app import clock
from app.catalog import wal as catalog_wal
from app.catalog.models import Source, WalArchive, WalSegment
from app.catalog.sources import get_source, list_sources
from app.context import Context
from app.wal import names


@dataclass(frozen=True)
class SegmentRange:
    """Segments `first` to `last` inclusive: archived (a range) or missing (a gap)."""

    first: str
    last: str
    segments: int


@dataclass
class TimelineStatus:
    timeline: int
    segments: int
    ranges: list[SegmentRange]
    gaps: list[SegmentRange]
    partial: list[str] = field(default_factory=list)


@dataclass
class WalStatus:
    source: str
    system_identifier: str | None
    segment_size: int | None
    since: str | None
    timelines: list[TimelineStatus]
    history: list[str]
    backup_labels: list[str]
    newest_segment: str | None
    newest_record_at: str | None
    last_archived_at: str | None
    rpo_seconds: float | None
    max_data_loss_seconds: int
    rpo_exceeded: bool

    @property
    def gap_count(self) -> int:
        return sum(len(timeline.gaps) for timeline in self.timelines)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["gaps"] = self.gap_count
        return doc


def runs(segnos: Iterable[int]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Consecutive runs of the distinct `segnos`, and the holes between them, as (first, last) pairs."""
    ordered = sorted(set(segnos))
    found: list[tuple[int, int]] = []
    for segno in ordered:
        if found and segno == found[-1][1] + 1:
            found[-1] = (found[-1][0], segno)
        else:
            found.append((segno, segno))
    holes = [(before[1] + 1, after[0] - 1) for before, after in pairwise(found)]
    return found, holes


def compute_status(
    source: str,
    archive: WalArchive | None,
    rows: Sequence[WalSegment],
    *,
    now: datetime,
    since: datetime | None,
    max_data_loss_seconds: int,
) -> WalStatus:
    """The status of one source's archive from its catalog rows (pure)."""
    segnos: dict[int, list[int]] = {}
    others: list[tuple[str, str, int]] = []
    for row in rows:
        if row.kind == names.SEGMENT and row.segno is not None:
            segnos.setdefault(row.timeline, []).append(row.segno)
        elif row.kind != names.SEGMENT:
            others.append((row.name, row.kind, row.timeline))
    found = [
        (timeline, first, last) for timeline, numbers in segnos.items() for first, last in runs(numbers)[0]
    ]
    return status_from_runs(
        source, archive, found, others, now=now, since=since, max_data_loss_seconds=max_data_loss_seconds
    )


def status_from_runs(
    source: str,
    archive: WalArchive | None,
    found: Iterable[tuple[int, int, int]],
    others: Iterable[tuple[str, str, int]],
    *,
    now: datetime,
    since: datetime | None,
    max_data_loss_seconds: int,
) -> WalStatus:
    """The status of one source's archive from its runs of archived segments, (timeline, first, last),
    and its other WAL files, (name, kind, timeline) (pure): what `wal_status` reads from the catalog, a
    row per run, however many segments the archive keeps."""
    segment_size = archive.segment_size if archive else None
    by_timeline: dict[int, list[tuple[int, int]]] = {}
    for timeline, first, last in found:
        by_timeline.setdefault(timeline, []).append((first, last))
    others = list(others)
    partials: dict[int, list[str]] = {}
    for name, kind, timeline in others:
        if kind == names.PARTIAL:
            partials.setdefault(timeline, []).append(name)
    timelines: list[TimelineStatus] = []
    for timeline in sorted(set(by_timeline) | set(partials)):
        pairs = sorted(by_timeline.get(timeline, []))
        holes = [(before[1] + 1, after[0] - 1) for before, after in pairwise(pairs)]

        def span(first: int, last: int, timeline: int = timeline) -> SegmentRange:
            assert segment_size is not None
            return SegmentRange(
                names.segment_name(timeline, first, segment_size),
                names.segment_name(timeline, last, segment_size),
                last - first + 1,
            )

        timelines.append(
            TimelineStatus(
                timeline,
                sum(last - first + 1 for first, last in pairs),
                [span(*pair) for pair in pairs] if segment_size else [],
                [span(*pair) for pair in holes] if segment_size else [],
                sorted(partials.get(timeline, [])),
            )
        )
    newest_record_at = archive.newest_record_at if archive else None
    rpo = (now - clock.as_utc(newest_record_at)).total_seconds() if newest_record_at else None
    return WalStatus(
        source=source,
        system_identifier=archive.system_identifier if archive else None,
        segment_size=segment_size,
        since=clock.iso(since),
        timelines=timelines,
        history=sorted(name for name, kind, _ in others if kind == names.HISTORY),
        backup_labels=sorted(name for name, kind, _ in others if kind == names.BACKUP),
        newest_segment=archive.newest_segment if archive else None,
        newest_record_at=clock.iso(newest_record_at),
        last_archived_at=clock.iso(archive.last_archived_at) if archive else None,
        rpo_seconds=round(rpo, 3) if rpo is not None else None,
        max_data_loss_seconds=max_data_loss_seconds,
        rpo_exceeded=rpo is None or rpo > max_data_loss_seconds,
    )


def wal_status(ctx: Context, source: str | None, since: datetime | None = None) -> list[WalStatus]:
    """The status of `source`, or of every PostgreSQL source when it is None."""
    now = clock.now()
    with ctx.sessions() as session:
        chosen: list[Source]
        if source is not None:
            chosen = [get_source(session, source)]
        else:
            chosen = [row for row in list_sources(session) if row.kind == "postgres"]
        return [
            status_from_runs(
                row.name,
                catalog_wal.get_archive(session, row.id),
                catalog_wal.segment_runs(session, row.id, since),
                catalog_wal.other_files(session, row.id, since),
                now=now,
                since=since,
                max_data_loss_seconds=ctx.settings.max_data_loss_seconds,
            )
            for row in chosen
        ]
