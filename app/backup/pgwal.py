"""The WAL a PostgreSQL base backup needs, waited for in the catalog: the backup is complete only once
every segment from its start to its stop is there, i.e. durable in this repository's storage (`wal push`
records a row only after the object is durable). docs/POSTGRES.md section 1, step 7."""

from __future__ import annotations

import time

from sqlalchemy import select

from app.catalog.models import WalSegment
from app.context import Context
from app.errors import BackupFailedError

#: Polling: the last segment is usually archived within a few hundred ms of pg_backup_stop's switch, so
#: finely at first, then every 0.2 s.
FINE_POLL_S, FINE_FOR_S, POLL_S = 0.05, 2.0, 0.2


def wait_for_wal(ctx: Context, source_id: int, source_name: str, needed: list[str]) -> None:
    """Until the catalog holds every segment in `needed` (pushed by archive_command to this source);
    BackupFailedError naming the first missing one after BACKUP_PG_ARCHIVE_TIMEOUT."""
    timeout = ctx.settings.backup_pg_archive_timeout
    started = time.monotonic()
    deadline = started + timeout
    while True:
        with ctx.sessions() as session:
            have = set(
                session.scalars(
                    select(WalSegment.name).where(
                        WalSegment.source_id == source_id, WalSegment.name.in_(needed)
                    )
                )
            )
        missing = [name for name in needed if name not in have]
        if not missing:
            return
        now = time.monotonic()
        if now > deadline:
            raise BackupFailedError(
                f"WAL segment {missing[0]}"
                + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                + f" that this backup needs is not in the archive of source {source_name} after {timeout} s",
                hint=f"archive_command must be 'equisplit-dr wal push %p --source {source_name}' "
                "and succeed: check `wal status`, `SELECT * FROM pg_stat_archiver` and the server log; "
                "raise BACKUP_PG_ARCHIVE_TIMEOUT for a slow archive",
            )
        time.sleep(FINE_POLL_S if now - started < FINE_FOR_S else POLL_S)
