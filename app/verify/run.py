"""One verification run (docs/VERIFY.md): structure of every selected backup, data of the packs the
options choose (each read once however many backups share it, in parallel, within the bandwidth
limit), then the results recorded per backup and per pack, and damage acted on."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app import clock
from app.archive.thaw import ThawOptions, needs_thaw, thaw_packs
from app.catalog import audit, backup_regions, replicas, verifications
from app.catalog.backups import USABLE_STATES, get_backup
from app.catalog.db import transaction
from app.catalog.models import Backup, Pack, Source
from app.catalog.readers import reading
from app.catalog.sources import get_source
from app.context import Context
from app.errors import BackupNotFoundError, ThawPendingError
from app.repo.format import Kind
from app.repo.manifest import file_chunks
from app.storage import Storage
from app.verify.data import PackCheck, check_pack
from app.verify.options import DATA_ALL, VerifyOptions, choose_packs
from app.verify.problems import PACK_SIZE, Problem
from app.verify.report import BackupOutcome, VerificationReport
from app.verify.structure import BackupCheck, check_structure
from app.verify.throttle import Bandwidth

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
_PACK_BATCH = 64


def verify_backups(ctx: Context, options: VerifyOptions, *, actor: str | None = None) -> VerificationReport:
    """Verify the backups `options` selects; the report names every damaged backup, pack and file. It is
    registered as a running reader while it runs (garbage collection keeps the packs it may have
    located: docs/GC.md)."""
    with reading(ctx.sessions, ctx.catalog_write_lock, "verify", ctx.region or "primary"):
        return _verify_backups(ctx, options, actor=actor)


def _verify_backups(ctx: Context, options: VerifyOptions, *, actor: str | None) -> VerificationReport:
    started = time.monotonic()
    repo = ctx.repository  # a wrong key or a missing keyring stops here, before anything is recorded
    selected = _select(ctx, options)
    run_id = verifications.new_verification_id()
    scope = {**options.scope(), **({"region": ctx.region} if ctx.region else {})}
    with transaction(ctx.sessions) as session:
        verifications.start_run(session, run_id, scope)
    bandwidth = Bandwidth(options.max_bytes_per_second)
    with ThreadPoolExecutor(max_workers=max(1, options.threads), thread_name_prefix="verify") as pool:
        checks = _map(pool, lambda b: check_structure(repo, ctx.sessions, b[0], b[1]), selected)
        all_packs = sorted(set().union(*(c.packs for c in checks)))
        with ctx.sessions() as session:
            known = {p: row.size for p, row in verifications.pack_rows(session, all_packs).items()}
            # a region has no read-back history of its own: the primary's would skip its copies
            last_ok = {} if ctx.region else verifications.last_checked(session, all_packs)
        sizes = dict(
            zip(all_packs, _map(pool, lambda p: _stored_size(repo.storage, p), all_packs), strict=True)
        )
        wrong_size = [p for p in all_packs if sizes[p] is not None and sizes[p] != known.get(p)]
        missing = [p for p in all_packs if sizes[p] is None]
        present = [p for p in all_packs if sizes[p] is not None]
        to_read = list(dict.fromkeys(choose_packs(options, present, last_ok, clock.now()) + wrong_size))
        # Cold packs of an archive in GLACIER or DEEP_ARCHIVE are thawed (requested, waited for) first.
        frozen = {p for (b, _), c in zip(selected, checks, strict=True) if needs_thaw(b.storage_class) for p in c.packs}
        # `--read-data` waits for the thaw; the scheduled (incremental, sample) runs request it and read
        # the packs still frozen at a later run, once thawed, so the verify queue never waits hours.
        wait = options.data == DATA_ALL
        try:
            thawed = thaw_packs(
                repo.storage,
                [p for p in to_read if p in frozen],
                ThawOptions.from_settings(ctx.settings),
                wait=wait,
            )
            to_read = [p for p in to_read if p not in set(thawed.pending)]
        except ThawPendingError as exc:  # the run is recorded as failed, not left running
            with transaction(ctx.sessions) as session:
                verifications.finish_run(
                    session,
                    run_id,
                    outcome="failed",
                    backups=len(selected),
                    packs_checked=len(all_packs),
                    packs_read=0,
                    chunks_read=0,
                    bytes_read=0,
                    seconds=time.monotonic() - started,
                    error=exc.message,
                )
            raise
        to_read += missing  # a missing pack's "read" finds it missing and names its chunks
        pack_checks = _check_packs(ctx, pool, to_read, bandwidth)
    for pack_id in wrong_size:
        pack_checks[pack_id].problems.insert(
            0,
            Problem(
                PACK_SIZE,
                f"packs/{pack_id}",
                f"the pack is {sizes[pack_id]} bytes in storage, the catalog recorded {known.get(pack_id)}",
            ),
        )
        pack_checks[pack_id].outcome = "damaged"
    bad = {p: c for p, c in pack_checks.items() if c.outcome != "ok"}
    outcomes = [_outcome(repo_reader(ctx), check, bad, pack_checks) for check in checks]
    report = VerificationReport(
        id=run_id,
        outcome="damaged" if bad or any(o.outcome != "passed" for o in outcomes) else "passed",
        data=options.data,
        backups=outcomes,
        packs_checked=len(all_packs),
        packs_read=sum(1 for c in pack_checks.values() if c.outcome != "missing"),
        chunks_read=sum(c.chunks_read for c in pack_checks.values()),
        bytes_read=sum(c.bytes_read for c in pack_checks.values()),
        seconds=0.0,
        damaged_packs=sorted(bad),
        chunks_forgotten=0,
    )
    report.seconds = time.monotonic() - started
    if ctx.region is not None:
        _record_region(ctx, ctx.region, report, bad, actor)
    else:
        _record(ctx, report, pack_checks, bad, actor)
    return report


def repo_reader(ctx: Context) -> Callable[[str], Iterable[tuple[str, list[str]]]]:
    """(path, chunk ids) of each file of a backup, read again from its manifest."""

    def files_of(backup_id: str) -> Iterable[tuple[str, list[str]]]:
        _, entries = ctx.repository.read_manifest_with_root(backup_id)
        return file_chunks(entries)

    return files_of


def _select(ctx: Context, options: VerifyOptions) -> list[tuple[Backup, str]]:
    chosen = _select_all(ctx, options)
    if ctx.region is None:
        return chosen
    with ctx.sessions() as session:
        in_region = set(replicas.copied_manifests(session, ctx.region))
    if options.backup_ids:
        for backup, _ in chosen:
            if backup.id not in in_region:
                raise BackupNotFoundError(
                    f"backup {backup.id} has no complete copy in region {ctx.region} yet",
                    hint="run `equisplit-dr replication run`, then see `equisplit-dr replication status`",
                )
    return [(b, name) for b, name in chosen if b.id in in_region]


def _select_all(ctx: Context, options: VerifyOptions) -> list[tuple[Backup, str]]:
    with ctx.sessions() as session:
        if options.backup_ids:
            chosen = [get_backup(session, backup_id) for backup_id in options.backup_ids]
        else:
            query = select(Backup).where(Backup.state.in_(USABLE_STATES))
            if options.source:
                query = query.where(Backup.source_id == get_source(session, options.source).id)
            if options.since:
                query = query.where(Backup.started_at >= options.since)
            chosen = list(session.scalars(query.order_by(Backup.started_at, Backup.id)))
            if ctx.region is not None:  # and what only this region keeps (docs/RETENTION.md section 5)
                chosen = [
                    b
                    for b, _, _ in backup_regions.in_region(session, ctx.region, options.source)
                    if options.since is None or clock.as_utc(b.started_at) >= clock.as_utc(options.since)
                ]
            if options.source and not chosen:
                raise BackupNotFoundError(
                    f"source {options.source} has no complete backup to verify"
                    + (" in that period" if options.since else ""),
                    hint="run a backup first, or widen --since",
                )
        for backup in chosen:
            if backup.state not in USABLE_STATES and not _kept_in_region(session, ctx, backup.id):
                raise BackupNotFoundError(
                    f"backup {backup.id} is {backup.state}: only complete or partial backups are verified",
                    hint="list backups with `equisplit-dr backup list`",
                )
        names = {s.id: s.name for s in session.scalars(select(Source))}
        for backup in chosen:
            session.expunge(backup)
        return [(b, names.get(b.source_id, "?")) for b in chosen]


def _kept_in_region(session: Session, ctx: Context, backup_id: str) -> bool:
    """Whether the primary deleted it and the region being verified keeps it."""
    if ctx.region is None:
        return False
    fate = backup_regions.state_in(session, backup_id, ctx.region)
    return fate is not None and fate.state == backup_regions.KEPT


def _stored_size(storage: Storage, pack_id: str) -> int | None:
    info = storage.stat(Kind.PACKS, pack_id)
    return None if info is None else info.size


def _check_packs(
    ctx: Context, pool: ThreadPoolExecutor, pack_ids: Sequence[str], bandwidth: Bandwidth
) -> dict[str, PackCheck]:
    """Data checks in batches, so the chunk rows held at once are bounded by the batch, not the run."""
    repo = ctx.repository
    results: dict[str, PackCheck] = {}
    for start in range(0, len(pack_ids), _PACK_BATCH):
        batch = pack_ids[start : start + _PACK_BATCH]
        with ctx.sessions() as session:
            indexed = {p: verifications.chunks_in_pack(session, p) for p in batch}
        futures = [pool.submit(check_pack, repo, p, indexed[p], bandwidth) for p in batch]
        for future in futures:
            check = future.result()
            results[check.pack_id] = check
    return results


def _outcome(
    files_of: Callable[[str], Iterable[tuple[str, list[str]]]],
    check: BackupCheck,
    bad: dict[str, PackCheck],
    read: dict[str, PackCheck],
) -> BackupOutcome:
    problems = list(check.problems)
    touched = sorted(check.packs & bad.keys())
    if touched:
        per_chunk: dict[str, Problem] = {}
        for pack_id in touched:
            for problem in bad[pack_id].problems:
                mine = Problem(problem.kind, problem.object, problem.message)
                problems.append(mine)
                for chunk_id in bad[pack_id].bad_chunks:
                    per_chunk.setdefault(chunk_id, mine)
        if per_chunk:
            for path, ids in files_of(check.backup_id):
                for problem in {id(per_chunk[c]): per_chunk[c] for c in ids if c in per_chunk}.values():
                    problem.add_file(path)
        # a pack's damage that no file of this backup touches (another backup's chunk) costs it nothing
        problems = [p for p in problems if p.file_count or p not in per_chunk.values()]
    return BackupOutcome(
        backup_id=check.backup_id,
        source=check.source,
        outcome="damaged" if problems else "passed",
        packs=len(check.packs),
        packs_read=len(check.packs & read.keys()),
        chunks=check.chunks,
        problems=problems,
    )


def _record(
    ctx: Context,
    report: VerificationReport,
    pack_checks: dict[str, PackCheck],
    bad: dict[str, PackCheck],
    actor: str | None,
) -> None:
    forget = {c for check in bad.values() for c in check.bad_chunks}
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        for check in pack_checks.values():
            verifications.record_pack(
                session,
                report.id,
                check.pack_id,
                check.outcome,
                check.bytes_read,
                check.seconds,
                [p.to_json() for p in check.problems],
            )
        for outcome in report.backups:
            row = session.get(Backup, outcome.backup_id)
            was_damaged = row is not None and row.damaged_at is not None
            verifications.record_backup(
                session,
                report.id,
                outcome.backup_id,
                outcome=outcome.outcome,
                packs=outcome.packs,
                packs_read=outcome.packs_read,
                chunks=outcome.chunks,
                problems=[p.to_json() for p in outcome.problems],
            )
            if outcome.outcome != "passed" and not was_damaged:
                audit.append(
                    session,
                    "backup.damaged",
                    outcome.backup_id,
                    {"verification": report.id, "problems": [p.to_json() for p in outcome.problems[:20]]},
                    actor,
                )
            elif outcome.outcome == "passed" and was_damaged:
                outcome.healed = True
                audit.append(session, "backup.healed", outcome.backup_id, {"verification": report.id}, actor)
        if forget:
            report.chunks_forgotten = verifications.forget_chunks(session, forget)
            _drop_emptied_packs(session, bad)
        _finish(session, report, actor)
    if report.outcome != "passed":
        log.error(
            "verification %s found damage: %d backup(s) (%s), pack(s) %s",
            report.id,
            len(report.damaged),
            ", ".join(b.backup_id for b in report.damaged[:10]),
            ", ".join(report.damaged_packs[:10]),
        )


def _record_region(
    ctx: Context, region: str, report: VerificationReport, bad: dict[str, PackCheck], actor: str | None
) -> None:
    """A region's damage never touches the primary's records: the region's damaged or missing copies go
    back to `pending`, so the next replication pass copies them again from the primary."""
    again: dict[str, set[str]] = {"packs": set(bad)}
    for outcome in report.backups:
        for problem in outcome.problems:
            kind, _, name = problem.object.partition("/")
            if kind in ("packs", "manifests", "wal") and name:
                again.setdefault(kind, set()).add(name)
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        for kind, names in again.items():
            replicas.requeue(session, region, kind, names)
        _finish(session, report, actor, region=region)
    if report.outcome != "passed":
        log.error(
            "verification %s found damage in region %s: %d backup(s) (%s), pack(s) %s; queued to copy again",
            report.id,
            region,
            len(report.damaged),
            ", ".join(b.backup_id for b in report.damaged[:10]),
            ", ".join(report.damaged_packs[:10]),
        )


def _finish(session: Session, report: VerificationReport, actor: str | None, **extra: str) -> None:
    """The run's row closed with its figures, and one audit entry (`extra` names a region)."""
    verifications.finish_run(
        session,
        report.id,
        outcome=report.outcome,
        backups=len(report.backups),
        packs_checked=report.packs_checked,
        packs_read=report.packs_read,
        chunks_read=report.chunks_read,
        bytes_read=report.bytes_read,
        seconds=report.seconds,
    )
    audit.append(
        session,
        "verification.finished",
        report.id,
        {
            **extra,
            "outcome": report.outcome,
            "data": report.data,
            "backups": len(report.backups),
            "damaged_backups": [b.backup_id for b in report.damaged],
            "damaged_packs": report.damaged_packs,
            "bytes_read": report.bytes_read,
        },
        actor,
    )


def _drop_emptied_packs(session: Session, bad: dict[str, PackCheck]) -> None:
    """A missing pack leaves the pack index too: nothing may be placed in it any more."""
    gone = [p for p, check in bad.items() if check.outcome == "missing"]
    if gone:
        session.execute(delete(Pack).where(Pack.id.in_(gone)))


def _map(pool: ThreadPoolExecutor, func: Callable[[T], R], items: Sequence[T]) -> list[R]:
    return list(pool.map(func, items))
