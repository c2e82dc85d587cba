"""Deleting an object in the primary storage and in every secondary region that holds a copy: the
region's replication rows first, then the objects (docs/GC.md, docs/REPLICATION.md)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.catalog.db import transaction
from app.catalog.models import ReplicaObject
from app.catalog.replicas import COPIED
from app.context import Context
from app.errors import EquisplitError
from app.replication.regions import configured_regions, is_enabled
from app.storage import Storage, open_storage

_BATCH = 500


def delete_many_everywhere(
    ctx: Context,
    kind: str,
    names: list[str],
    threads: int = 8,
    *,
    spare: Mapping[str, Collection[str]] | None = None,
) -> list[str]:
    """Delete objects from the primary (an error raises) and from each region (errors are returned,
    named): the regions' rows first, in one transaction, then the objects, `threads` at a time.
    `spare` names, per object, the regions that keep it (their per-region retention): its row and its
    copy there stay."""
    if not names:
        return []
    spare = spare or {}
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        everywhere = [n for n in names if not spare.get(n)]
        for start in range(0, len(everywhere), _BATCH):
            batch = everywhere[start : start + _BATCH]
            session.execute(
                delete(ReplicaObject).where(ReplicaObject.kind == kind, ReplicaObject.name.in_(batch))
            )
        for name in (n for n in names if spare.get(n)):
            session.execute(
                delete(ReplicaObject).where(
                    ReplicaObject.kind == kind,
                    ReplicaObject.name == name,
                    ReplicaObject.region.not_in(list(spare[name])),
                )
            )
    with ThreadPoolExecutor(min(threads, len(names))) as pool:
        list(pool.map(lambda name: ctx.storage.delete(kind, name), names))
    if not is_enabled(ctx.settings):
        return []
    problems: list[str] = []
    for region in configured_regions(ctx.settings):
        here = [n for n in names if region.name not in spare.get(n, ())]
        if not here:
            continue
        storage = open_storage(region.url)

        def one(name: str, storage: Storage = storage, region: str = region.name) -> str | None:
            try:
                storage.delete(kind, name)
            except EquisplitError as exc:
                return f"region {region}: {kind}/{name} not deleted: {exc.message}"
            return None

        try:
            with ThreadPoolExecutor(min(threads, len(here))) as pool:
                problems.extend(p for p in pool.map(one, here) if p)
        finally:
            storage.close()
    return problems


def not_yet_copied(ctx: Context, session: Session, holder: str, pack_ids: set[str]) -> list[str]:
    """The regions (replication on) that hold a copy of pack `holder` but not yet of every pack of
    `pack_ids`, where the chunk index now puts `holder`'s live chunks: `holder` stays until they are
    copied, so the backups a region holds never lack a chunk. A region without `holder` never needed it."""
    if not is_enabled(ctx.settings):
        return []
    wanted = sorted(pack_ids)
    behind = []
    for region in configured_regions(ctx.settings):
        rows = dict(
            session.execute(
                select(ReplicaObject.name, ReplicaObject.state).where(
                    ReplicaObject.region == region.name,
                    ReplicaObject.kind == "packs",
                    ReplicaObject.name.in_([holder, *wanted]),
                )
            ).all()
        )
        if rows.get(holder) == COPIED and any(rows.get(p) != COPIED for p in wanted):
            behind.append(region.name)
    return behind
