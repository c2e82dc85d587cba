"""The live set: what the manifests in storage reference, gathered into temporary tables of the
catalog connection (so memory stays bounded by one manifest, whatever the repository holds)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select, text

from app.catalog.models import Backup
from app.context import Context
from app.errors import EquisplitError, IntegrityError
from app.repo import manifest
from app.repo.format import Kind, Tier, tier_of
from app.repo.repository import Repository

LIVE_CHUNKS = "gc_live_chunks"
ROOT_PACKS = "gc_root_packs"
_BATCH = 5000


@dataclass
class LiveSet:
    manifests: int = 0
    chunks: int = 0  # references inserted (duplicates included)


def create_tables(conn: Connection, tables: tuple[str, str] = (LIVE_CHUNKS, ROOT_PACKS)) -> None:
    """`tables`: live chunks, root packs. The first holds (chunk id, tier): a chunk is live in the tier of
    the manifest that needs it, so a cold copy and a standard copy of it are each kept while its own
    tier needs it (docs/ARCHIVE.md)."""
    for table, columns in zip(
        tables,
        ("chunk_id VARCHAR(64), tier VARCHAR(16), PRIMARY KEY (chunk_id, tier)", "pack_id VARCHAR(64) PRIMARY KEY"),
        strict=True,
    ):
        conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(text(f"CREATE TEMPORARY TABLE {table} ({columns})"))


def gather(ctx: Context, conn: Connection) -> LiveSet:
    """Every manifest in storage whose backup is not deleted: its file chunks (in its tier) and its own
    chunks (standard, like every manifest chunk) are live, and so is every pack its root names. An unreadable manifest stops the collection: what it
    references cannot be known, so nothing may be deleted."""
    repo = ctx.repository
    deleted = set(conn.execute(select(Backup.id).where(Backup.state == "deleted")).scalars())
    live = LiveSet()
    for info in repo.storage.list(Kind.MANIFESTS):
        if info.name in deleted:
            continue
        add_manifest(conn, repo, info.name, live)
    return live


def add_manifest(
    conn: Connection,
    repo: Repository,
    backup_id: str,
    live: LiveSet,
    where: str = "",
    tables: tuple[str, str] = (LIVE_CHUNKS, ROOT_PACKS),
) -> None:
    """One manifest's chunks (its files' in its tier, its own standard) and root packs into the live
    tables (`tables`: chunks, root packs); an unreadable one raises IntegrityError (`where` names a
    region it was read from)."""
    try:
        root, entries = repo.read_manifest_with_root(backup_id)
    except EquisplitError as exc:
        raise IntegrityError(
            f"garbage collection stopped: the manifest of backup {backup_id}{where} cannot be read",
            detail=exc.message,
            hint="nothing was deleted; run `equisplit-dr backup verify --id "
            f"{backup_id}` and repair or remove that backup first",
        ) from exc
    live.manifests += 1
    own = manifest.root_chunks(root)
    _insert_packs(conn, tables[1], {c.pack_id for c in own})
    tier = tier_of(root["backup"])
    ids = [(c.chunk_id, Tier.STANDARD) for c in own] + [
        (c, tier) for _, chunk_ids in manifest.file_chunks(entries) for c in chunk_ids
    ]
    live.chunks += len(ids)
    _insert_chunks(conn, tables[0], ids)


def _ignoring_duplicates(conn: Connection, table: str, columns: str, values: str) -> Any:
    if conn.dialect.name == "postgresql":
        return text(f"INSERT INTO {table} ({columns}) VALUES ({values}) ON CONFLICT DO NOTHING")
    return text(f"INSERT OR IGNORE INTO {table} ({columns}) VALUES ({values})")


def _insert_packs(conn: Connection, table: str, values: Iterable[str]) -> None:
    unique = list(dict.fromkeys(values))
    stmt = _ignoring_duplicates(conn, table, "pack_id", ":v")
    for start in range(0, len(unique), _BATCH):
        conn.execute(stmt, [{"v": v} for v in unique[start : start + _BATCH]])


def _insert_chunks(conn: Connection, table: str, values: Iterable[tuple[str, str]]) -> None:
    unique = list(dict.fromkeys(values))
    stmt = _ignoring_duplicates(conn, table, "chunk_id, tier", ":v, :t")
    for start in range(0, len(unique), _BATCH):
        conn.execute(stmt, [{"v": v, "t": t} for v, t in unique[start : start + _BATCH]])
