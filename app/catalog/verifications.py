"""Verification records: runs, each backup's result, each pack's latest data check, and the damage
they found (docs/VERIFY.md). Only the catalog's side: what to check is decided in app/verify/."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app import clock
from app.catalog.models import Backup, BackupVerification, Chunk, Pack, PackVerification, Verification

_BATCH = 2000


def new_verification_id() -> str:
    return "verify-" + clock.now().strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def start_run(session: Session, run_id: str, scope: dict[str, Any]) -> Verification:
    row = Verification(id=run_id, started_at=clock.now(), outcome="running", scope=scope)
    session.add(row)
    session.flush()
    return row


def pack_rows(session: Session, pack_ids: Iterable[str]) -> dict[str, Pack]:
    """The catalog's rows of these packs (absent ids are unknown packs)."""
    wanted = list(dict.fromkeys(pack_ids))
    found: dict[str, Pack] = {}
    for start in range(0, len(wanted), _BATCH):
        for row in session.scalars(select(Pack).where(Pack.id.in_(wanted[start : start + _BATCH]))):
            found[row.id] = row
    return found


def chunks_in_pack(session: Session, pack_id: str) -> list[tuple[str, int, int, int]]:
    """(chunk id, offset, length, raw length) of every chunk the index places in the pack, by offset."""
    rows = session.execute(
        select(Chunk.id, Chunk.offset, Chunk.length, Chunk.raw_length)
        .where(Chunk.pack_id == pack_id)
        .order_by(Chunk.offset)
    )
    return [(r.id, r.offset, r.length, r.raw_length) for r in rows]


def last_checked(session: Session, pack_ids: Sequence[str]) -> dict[str, datetime]:
    """When each pack's data was last found whole; packs never checked (or damaged) are absent."""
    found: dict[str, datetime] = {}
    for start in range(0, len(pack_ids), _BATCH):
        rows = session.execute(
            select(PackVerification.pack_id, PackVerification.verified_at).where(
                PackVerification.pack_id.in_(pack_ids[start : start + _BATCH]),
                PackVerification.outcome == "ok",
            )
        )
        found.update({r.pack_id: clock.as_utc(r.verified_at) for r in rows})
    return found


def record_pack(
    session: Session,
    run_id: str,
    pack_id: str,
    outcome: str,
    bytes_read: int,
    seconds: float,
    problems: list[dict[str, Any]],
) -> None:
    """The pack's latest check, replacing the one before."""
    values = {
        "pack_id": pack_id,
        "verified_at": clock.now(),
        "outcome": outcome,
        "verification_id": run_id,
        "bytes_read": bytes_read,
        "seconds": round(seconds, 3),
        "problems": {"items": problems},
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(PackVerification).values(**values)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[PackVerification.pack_id],
            set_={k: stmt.excluded[k] for k in values if k != "pack_id"},
        )
    )


def record_backup(
    session: Session,
    run_id: str,
    backup_id: str,
    *,
    outcome: str,
    packs: int,
    packs_read: int,
    chunks: int,
    problems: list[dict[str, Any]],
) -> None:
    """One backup's result in this run; a whole backup is marked verified (and no longer damaged), a
    damaged one marked damaged."""
    now = clock.now()
    session.merge(
        BackupVerification(
            verification_id=run_id,
            backup_id=backup_id,
            checked_at=now,
            outcome=outcome,
            packs=packs,
            packs_read=packs_read,
            chunks=chunks,
            problems={"items": problems},
        )
    )
    row = session.get(Backup, backup_id)
    if row is None:
        return
    if outcome == "passed":
        row.verified_at, row.damaged_at = now, None
    else:
        row.damaged_at = row.damaged_at or now


def forget_chunks(session: Session, chunk_ids: Iterable[str]) -> int:
    """Take damaged or lost chunks out of the index, so the next backup that meets their content stores
    it again instead of pointing at the damaged copy."""
    ids = list(dict.fromkeys(chunk_ids))
    removed = 0
    for start in range(0, len(ids), _BATCH):
        result = session.execute(delete(Chunk).where(Chunk.id.in_(ids[start : start + _BATCH])))
        removed += int(getattr(result, "rowcount", 0) or 0)
    return removed


def finish_run(
    session: Session,
    run_id: str,
    *,
    outcome: str,
    backups: int,
    packs_checked: int,
    packs_read: int,
    chunks_read: int,
    bytes_read: int,
    seconds: float,
    error: str | None = None,
) -> None:
    session.execute(
        update(Verification)
        .where(Verification.id == run_id)
        .values(
            finished_at=clock.now(),
            outcome=outcome,
            backups=backups,
            packs_checked=packs_checked,
            packs_read=packs_read,
            chunks_read=chunks_read,
            bytes_read=bytes_read,
            seconds=round(seconds, 3),
            error=error,
        )
    )


def last_runs(session: Session, limit: int = 20) -> list[Verification]:
    return list(session.scalars(select(Verification).order_by(Verification.started_at.desc()).limit(limit)))


def damaged_backups(session: Session) -> list[Backup]:
    return list(session.scalars(select(Backup).where(Backup.damaged_at.is_not(None)).order_by(Backup.id)))
