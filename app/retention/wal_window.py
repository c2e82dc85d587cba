"""Which WAL a set of kept base backups needs (docs/RETENTION.md section 4): pure, shared by the
primary's WAL thinning and each region's."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from app import clock
from app.catalog.models import Backup
from app.retention.policy import RetentionPolicy

Range = tuple[int | None, str, str]  # timeline, first and last segment a base backup needs


def wal_bounds(
    kept: Sequence[Backup], policy: RetentionPolicy, now: datetime, regional: Sequence[Backup] = ()
) -> tuple[datetime, list[Range]] | None:
    """Pure: from the kept backups, when the window's base backup started (every WAL file archived from
    then on is kept) and each kept base backup's own WAL range (also each of `regional`'s); None when no
    base backup is kept (then every WAL file is)."""
    bases = sorted(
        (b for b in kept if b.pg_start_wal and b.pg_stopped_at is not None),
        key=lambda b: clock.as_utc(b.pg_stopped_at or b.started_at),
    )
    if not bases:
        return None
    present = [clock.as_utc(b.started_at) for b in bases if clock.as_utc(b.started_at) <= now]
    window_start = (max(present) if present else now) - policy.pitr_window
    before = [b for b in bases if b.pg_stopped_at and clock.as_utc(b.pg_stopped_at) < window_start]
    window_base = before[-1] if before else bases[0]
    kept_from = clock.as_utc(window_base.pg_started_at or window_base.started_at)
    ranges = [(b.pg_timeline, b.pg_start_wal or "", b.pg_stop_wal or "") for b in [*bases, *regional]
              if b.pg_start_wal]  # fmt: skip
    return kept_from, ranges
