"""Thawing cold packs before a read (docs/ARCHIVE.md, "The thaw step"): ask storage which packs are still
frozen, send a restore request for each that nobody requested yet, then poll until every pack is
readable or the timeout passes. Re-running is cheap and safe: a pack already thawing or thawed is asked
about (one HEAD), never requested again."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from app.errors import ObjectNotFoundError, ThawPendingError
from app.repo.format import Kind
from app.settings import Settings
from app.storage.base import Storage, Thawing, ThawState

log = logging.getLogger(__name__)

#: Storage classes whose objects must be thawed before a read (the others read at once).
THAWED_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
#: HEADs and restore requests in flight at once.
THREADS = 16
#: Packs named in an error; the rest are counted.
_SHOWN = 5

#: Called with (packs readable, packs in all) after each round.
ThawProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class ThawOptions:
    request: bool = True
    days: int = 7
    tier: str = "Standard"
    timeout: float = 900.0
    poll_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings, *, request_only: bool = False) -> ThawOptions:
        return cls(
            request=settings.backup_thaw_request or request_only,
            days=settings.backup_thaw_days,
            tier=settings.backup_thaw_tier,
            timeout=0.0 if request_only else float(settings.backup_thaw_timeout),
            poll_seconds=settings.backup_thaw_poll_seconds,
        )


@dataclass
class ThawReport:
    packs: int = 0
    #: frozen when asked first, and requested now by this run
    requested: list[str] = field(default_factory=list)
    #: already thawing when asked first (requested earlier, by this or another run)
    already_thawing: int = 0
    #: frozen and still not readable at the end (empty: every pack is readable)
    pending: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "packs": self.packs,
            "requested": len(self.requested),
            "already_thawing": self.already_thawing,
            "pending": self.pending,
            "seconds": round(self.seconds, 3),
        }


def needs_thaw(storage_class: str | None) -> bool:
    """Whether packs written in `storage_class` must be thawed before a read."""
    return storage_class in THAWED_CLASSES


def thaw_for_backup(
    storage: Storage,
    settings: Settings,
    header: dict[str, Any],
    pack_ids: Iterable[str],
    *,
    request_only: bool = False,
    progress: ThawProgress | None = None,
) -> ThawReport | None:
    """Thaw the packs a read of the backup whose manifest header is `header` needs, if it was written in
    a class that must be thawed (GLACIER, DEEP_ARCHIVE); None when nothing needs it. `request_only`
    sends the requests and returns, its report naming the packs still frozen."""
    if not needs_thaw(header.get("storage_class")):
        return None
    options = ThawOptions.from_settings(settings, request_only=request_only)

    def report_progress(readable: int, total: int) -> None:
        log.info("backup %s: %d of %d cold pack(s) readable", header.get("id"), readable, total)
        if progress:
            progress(readable, total)

    return thaw_packs(storage, pack_ids, options, progress=report_progress, wait=not request_only)


def thaw_packs(
    storage: Storage,
    pack_ids: Iterable[str],
    options: ThawOptions,
    *,
    progress: ThawProgress | None = None,
    wait: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    kind: str = Kind.PACKS,
) -> ThawReport:
    """Make `pack_ids` readable: request a thaw of each frozen pack nobody requested (unless
    `options.request` is off), then, with `wait`, poll until all are readable. ThawPendingError names
    the packs still frozen when `options.timeout` passes (with `wait`); without `wait` the report's
    `pending` lists them. A backend without archive classes has nothing to thaw. `kind` is packs unless
    a caller thaws other objects (replication thaws whatever the primary holds frozen)."""
    wanted = sorted(set(pack_ids))
    report = ThawReport(packs=len(wanted))
    if not isinstance(storage, Thawing) or not wanted:
        return report
    started = time.monotonic()
    states = _states(storage, wanted, kind)
    frozen = [p for p in wanted if not states[p].readable]
    report.already_thawing = sum(1 for p in frozen if states[p].thawing)
    if options.request:
        report.requested = [p for p in frozen if not states[p].thawing]
        _each(lambda p: storage.request_thaw(kind, p, options.days, options.tier), report.requested)
    pending = frozen
    while True:
        if progress:
            progress(len(wanted) - len(pending), len(wanted))
        if not pending or not wait:
            break
        if time.monotonic() - started >= options.timeout:
            break
        sleep(min(options.poll_seconds, max(0.0, options.timeout - (time.monotonic() - started))))
        states = _states(storage, pending, kind)
        pending = [p for p in pending if not states[p].readable]
    report.pending = pending
    report.seconds = time.monotonic() - started
    if pending and wait:
        raise _still_frozen(report, options)
    return report


def _states(storage: Thawing, pack_ids: list[str], kind: str = Kind.PACKS) -> dict[str, ThawState]:
    found = _each(lambda p: storage.thaw_state(kind, p), pack_ids)
    missing = [p for p, state in zip(pack_ids, found, strict=True) if state is None]
    if missing:
        raise ObjectNotFoundError(
            kind,
            missing[0],
            str(getattr(storage, "location", "storage")),
            detail=f"{len(missing)} pack(s) to thaw are missing",
            hint="restore the packs from a replica (secondary region), then run again",
        )
    return {p: state for p, state in zip(pack_ids, found, strict=True) if state is not None}


def _each(call: Callable[[str], Any], pack_ids: list[str]) -> list[Any]:
    if not pack_ids:
        return []
    with ThreadPoolExecutor(min(THREADS, len(pack_ids)), thread_name_prefix="thaw") as pool:
        return list(pool.map(call, pack_ids))


def _still_frozen(report: ThawReport, options: ThawOptions) -> ThawPendingError:
    shown = ", ".join(report.pending[:_SHOWN])
    more = f" and {len(report.pending) - _SHOWN} more" if len(report.pending) > _SHOWN else ""
    if not options.request and not report.requested and not report.already_thawing:
        why = "no thaw was requested (BACKUP_THAW_REQUEST=false)"
    else:
        why = (
            f"thaw requested ({len(report.requested)} now, {report.already_thawing} before) at tier "
            f"{options.tier}, not finished after {int(report.seconds)} s"
        )
    return ThawPendingError(
        f"{len(report.pending)} of {report.packs} cold pack(s) are not readable yet: {why}",
        detail=f"still frozen: {shown}{more}",
        hint="run the same command again later (a Standard thaw of DEEP_ARCHIVE takes up to 12 hours, "
        "Bulk up to 48); packs already requested are not requested again. "
        + (
            "Raise BACKUP_THAW_TIMEOUT to wait longer"
            if options.request
            else "Set BACKUP_THAW_REQUEST=true (or run `restore --request-only`) to send the requests"
        ),
    )
