"""One replication pass per region (docs/REPLICATION.md section 2): keyring and config first, then what
the catalog says is new, packs and WAL in parallel, manifests last and only once every pack they need is
in the region. One pass per region at a time (a catalog lease)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select

from app import clock
from app.archive.thaw import ThawOptions
from app.catalog import audit, backup_regions, locks, replicas
from app.catalog.backups import USABLE_STATES
from app.catalog.db import transaction
from app.catalog.models import Backup, Pack, ReplicaObject, Source
from app.context import Context
from app.errors import EquisplitError, LockedError
from app.replication.anchors import copy_anchors
from app.replication.copy import COPIED, MISSING, THAWING, ColdRules, CopyOutcome, copy_object, sync_keyring
from app.replication.regions import Region, configured_regions, is_enabled
from app.storage import Storage, open_storage
from app.verify.structure import check_structure

log = logging.getLogger(__name__)

#: Rows read and copied per batch; memory is one object per thread.
BATCH = 256
#: A pass holds its region's lease this long at most (a task's hard time limit is shorter).
LEASE = timedelta(hours=4)
_DATA_KINDS = ("packs", "wal")
READY, HELD, ADDED, MISSING_NOW, FAILED_NOW = "ready", "held", "added", "missing", "failed"
DROPPED = "dropped"  # deleted in the region by its own retention policy: not copied, its row removed


@dataclass
class RegionPass:
    """What one pass over one region did."""

    region: str
    discovered: int = 0
    copied: int = 0
    present: int = 0
    failed: int = 0
    missing: int = 0
    #: frozen in the primary (GLACIER, DEEP_ARCHIVE), left pending while they thaw
    thawing: int = 0
    bytes_copied: int = 0
    manifests_held: int = 0
    busy: bool = False
    error: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {**vars(self), "seconds": round(self.seconds, 3)}


def describe(exc: BaseException) -> str:
    """An error as one line for the catalog: the domain message (already free of secrets), or the type."""
    if isinstance(exc, EquisplitError):
        return exc.message[:500]
    return f"{type(exc).__name__}: {exc}"[:500]


def replicate(ctx: Context, region: str | None = None, *, actor: str | None = None) -> list[RegionPass]:
    """A pass over every secondary region (or the one named). Nothing when replication is off."""
    if not is_enabled(ctx.settings) and region is None:
        return []
    results = []
    for target in configured_regions(ctx.settings, region):
        results.append(replicate_region(ctx, target, actor=actor))
    return results


def replicate_region(ctx: Context, region: Region, *, actor: str | None = None) -> RegionPass:
    started = time.monotonic()
    result = RegionPass(region.name)
    holder = locks.new_holder()
    lease = f"replicate:{region.name}"
    try:
        locks.acquire(ctx.sessions, lease, holder, LEASE)
    except LockedError:
        result.busy = True
        return result
    try:
        storage = open_storage(region.url)
        try:
            _pass(ctx, region, storage, result)
        finally:
            storage.close()
    except Exception as exc:  # recorded for status and health; the caller decides (the task retries)
        result.error = describe(exc)
        log.error("replication to region %s failed: %s", region.name, result.error)
    finally:
        result.seconds = time.monotonic() - started
        with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
            replicas.record_pass(session, region.name, result.error)
            if result.copied or result.error:
                audit.append(session, "replication.pass", region.name, result.to_json(), actor)
        locks.release(ctx.sessions, lease, holder)
    return result


def cold_rules(ctx: Context) -> ColdRules:
    """How archive objects are copied: frozen ones thawed as BACKUP_THAW_REQUEST/_DAYS/_TIER say, locked
    ones locked alike in the region when BACKUP_ARCHIVE_OBJECT_LOCK is on."""
    return ColdRules(ThawOptions.from_settings(ctx.settings), ctx.settings.backup_archive_object_lock)


def _pass(ctx: Context, region: Region, storage: Storage, result: RegionPass) -> None:
    primary = ctx.storage
    _copy_repository_head(ctx, region.name, primary, storage)
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        result.discovered = replicas.discover(session, region.name)
    workers = ctx.settings.backup_replication_concurrency
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"replicate-{region.name}") as pool:
        for _ in range(2):  # a second round for packs a manifest needed that replication had not seen
            for kind in _DATA_KINDS:
                _copy_kind(ctx, region.name, kind, primary, storage, pool, result)
            if not _copy_manifests(ctx, region.name, primary, storage, result):
                break


def _copy_repository_head(ctx: Context, region: str, primary: Storage, storage: Storage) -> None:
    """The keyring and config, before anything that needs them; a failure here stops the pass."""
    sync_keyring(primary, storage)
    config = copy_object(primary, storage, "config", "config")
    copy_anchors(primary, storage)  # the audit trail's sealed heads (app/replication/anchors.py)
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        size = primary.stat("keys", "keyring")
        replicas.mark(session, region, "keys", "keyring", replicas.COPIED, size=size.size if size else None)
        replicas.mark(session, region, "config", "config", replicas.COPIED, size=config.size)


def _copy_kind(
    ctx: Context,
    region: str,
    kind: str,
    primary: Storage,
    storage: Storage,
    pool: ThreadPoolExecutor,
    result: RegionPass,
) -> None:
    after = ""
    rules = cold_rules(ctx)
    while True:
        with ctx.sessions() as session:
            rows = replicas.waiting(session, region, kind, after, BATCH)
        if not rows:
            return
        after = rows[-1].name
        outcomes = list(pool.map(lambda row: _attempt(primary, storage, row, rules), rows))
        _record(ctx, region, rows, outcomes, result)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if len(errors) == len(outcomes):
            raise errors[0]  # the region (or the primary) is unreachable: stop, report, retry later


def _attempt(
    primary: Storage, storage: Storage, row: ReplicaObject, rules: ColdRules
) -> CopyOutcome | BaseException:
    try:
        return copy_object(
            primary, storage, row.kind, row.name, row.size, force=row.state == replicas.DAMAGED, cold=rules
        )
    except Exception as exc:  # one object's failure is recorded on its row; the others go on
        return exc


def _record(
    ctx: Context,
    region: str,
    rows: Sequence[ReplicaObject],
    outcomes: Sequence[CopyOutcome | BaseException],
    result: RegionPass,
) -> None:
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        for row, outcome in zip(rows, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                result.failed += 1
                replicas.mark(session, region, row.kind, row.name, replicas.FAILED, error=describe(outcome))
            elif outcome.result == THAWING:  # not a failure: real lag, copied once the thaw is done
                result.thawing += 1
                keep = replicas.DAMAGED if row.state == replicas.DAMAGED else replicas.PENDING  # still forced
                replicas.mark(session, region, row.kind, row.name, keep, error=outcome.reason)
            elif outcome.result == MISSING:
                result.missing += 1
                replicas.mark(
                    session, region, row.kind, row.name, replicas.MISSING, error="not in the primary storage"
                )
            else:
                if outcome.result == COPIED:
                    result.copied += 1
                    result.bytes_copied += outcome.size
                else:
                    result.present += 1
                replicas.mark(session, region, row.kind, row.name, replicas.COPIED, size=outcome.size)


def _copy_manifests(
    ctx: Context, region: str, primary: Storage, storage: Storage, result: RegionPass
) -> bool:
    """Copy each waiting manifest whose packs (and, for a base backup, earlier WAL) are in the region.
    True when packs it needed had no row yet and were added: the caller copies them and comes back."""
    added = False
    result.manifests_held = 0
    after = ""
    while True:
        with ctx.sessions() as session:
            rows = replicas.waiting(session, region, "manifests", after, BATCH)
        if not rows:
            return added
        after = rows[-1].name
        for row in rows:
            verdict = _manifest_ready(ctx, region, row)
            added = added or verdict == ADDED
            if verdict in (HELD, ADDED):
                result.manifests_held += 1
            elif verdict == MISSING_NOW:
                result.missing += 1
            elif verdict == FAILED_NOW:
                result.failed += 1
            if verdict != READY:
                continue
            outcome = _attempt(primary, storage, row, cold_rules(ctx))
            _record(ctx, region, [row], [outcome], result)


def _manifest_ready(ctx: Context, region: str, row: ReplicaObject) -> str:
    """READY to copy now; HELD for packs or WAL still waiting; ADDED: needed packs had no row and were
    added as pending; MISSING_NOW / FAILED_NOW: recorded as such (deleted, or not whole in the primary);
    DROPPED: the region's own retention deleted it there (docs/RETENTION.md section 5)."""
    with ctx.sessions() as session:
        backup = session.get(Backup, row.name)
        fate = backup_regions.state_in(session, row.name, region)
        if fate is not None and fate.state == backup_regions.DELETED:  # the region's policy dropped it
            with ctx.catalog_write_lock, transaction(ctx.sessions) as write:
                write.execute(
                    delete(ReplicaObject).where(
                        ReplicaObject.region == region,
                        ReplicaObject.kind == "manifests",
                        ReplicaObject.name == row.name,
                    )
                )
            return DROPPED
        if backup is None or backup.state not in USABLE_STATES:  # deleted (retention) before it was copied
            with ctx.catalog_write_lock, transaction(ctx.sessions) as write:
                replicas.mark(
                    write, region, "manifests", row.name, replicas.MISSING, error="the backup was deleted"
                )
            return MISSING_NOW
        source = session.get(Source, backup.source_id)
        session.expunge(backup)
    check = check_structure(ctx.repository, ctx.sessions, backup, source.name if source else "?")
    if check.problems:
        first = check.problems[0]
        with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
            replicas.mark(
                session,
                region,
                "manifests",
                row.name,
                replicas.FAILED,
                error=f"the backup is not whole in the primary ({first.kind}: {first.object}): not copied",
            )
        return FAILED_NOW
    packs = sorted(check.packs)
    with ctx.sessions() as session:
        known = replicas.states(session, region, "packs", packs)
    unknown = [p for p in packs if p not in known]
    if unknown:
        with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
            rows = session.execute(select(Pack.id, Pack.size, Pack.created_at).where(Pack.id.in_(unknown)))
            replicas.add_pending(
                session,
                region,
                (replicas.Candidate("packs", p, size, clock.as_utc(at)) for p, size, at in rows),
            )
        return ADDED
    dropped = [p for p, state in known.items() if state == replicas.DROPPED]
    if dropped:  # the region's garbage collection removed them; this backup needs them there again
        with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
            replicas.revive(session, region, "packs", dropped)
        return ADDED
    if any(state != replicas.COPIED for state in known.values()):
        return HELD
    if backup.pg_stop_wal and source is not None:
        with ctx.sessions() as session:
            ended = clock.as_utc(backup.finished_at or backup.started_at)
            if replicas.wal_waiting_before(session, region, source.name, ended):
                return HELD
    return READY
