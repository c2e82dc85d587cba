"""How each source kind is walked and bracketed, so one engine backs up file trees and PostgreSQL.

A file tree is a walk. A PostgreSQL cluster is `pg_backup_start` in a held session before the walk,
then, after every unit has read its files, pg_control, `pg_backup_stop`, the backup label and the wait
for the WAL the backup needs (app/backup/postgres.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from app.backup.writer import ChunkWriter
from app.context import Context
from app.sources.files import Entry, Reusable, walk_tree
from app.sources.watch import SizeWatch


@dataclass
class SourceWalk:
    """What a walker found: the entries (read from `root`), and how units must read them."""

    kind: str
    root: Path
    entries: list[Entry]
    errors: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    #: For the units: `missing_ok` (a file gone meanwhile is dropped silently), `attempts` (re-reads of a
    #: file that changed while read), `on_unreadable` (`skip` or `fail`; default the setting), `links`
    #: (symlinks on a path that belong to the source and are followed, app/sources/confined.py).
    read: dict[str, Any] = field(default_factory=dict)
    #: Whether `finish` writes the extra object (`<id>.extra`) that finalize merges into the manifest.
    has_extra: bool = False


@dataclass
class SourceInfo:
    id: int
    name: str
    kind: str
    path: str | None
    options: dict[str, Any]


class SourceHooks(Protocol):
    """A source kind's part in a backup. `begin` runs once the backup row exists, before the walk
    (`reusable` says which files the parent lets it take over unread; a walker may ignore it);
    `finish` after every unit, before the manifest (it may add entries through a writer it makes and an extra
    object, docs/FORMAT.md section 6); `close` always, last."""

    kind: str

    def begin(self, ctx: Context, backup_id: str) -> None: ...

    def walk(
        self, ctx: Context, watch: SizeWatch | None = None, reusable: Reusable | None = None
    ) -> SourceWalk: ...

    def finish(self, ctx: Context, backup_id: str, make_writer: Callable[[], ChunkWriter]) -> None: ...

    def close(self) -> None: ...


class FileTreeHooks:
    """A file tree: a walk of its directory, nothing before or after."""

    kind = "files"

    def __init__(self, source: SourceInfo) -> None:
        self.source = source

    def begin(self, ctx: Context, backup_id: str) -> None:
        return None

    def walk(
        self, ctx: Context, watch: SizeWatch | None = None, reusable: Reusable | None = None
    ) -> SourceWalk:
        root = Path(self.source.path or "")
        walk = walk_tree(root, watch, reusable)
        warnings = [{"path": s["path"], "warning": s["reason"]} for s in walk.skipped]
        return SourceWalk("files", root, walk.entries, walk.errors, warnings)

    def finish(self, ctx: Context, backup_id: str, make_writer: Callable[[], ChunkWriter]) -> None:
        return None

    def close(self) -> None:
        return None


def load_source(ctx: Context, name: str) -> SourceInfo:
    """The registered source `name`; SourceError if there is none."""
    from app.catalog.sources import get_source

    with ctx.sessions() as session:
        row = get_source(session, name)
        return SourceInfo(row.id, row.name, row.kind, row.path, dict(row.options or {}))


def hooks_for(source: SourceInfo) -> SourceHooks:
    if source.kind == "postgres":
        from app.backup.postgres import PostgresHooks

        return PostgresHooks(source)
    return FileTreeHooks(source)
