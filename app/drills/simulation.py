"""A full simulation's first step: the catalog is lost too. A scratch catalog is rebuilt from storage
alone (the master key and the repository, nothing else), and the drill restores through it."""

from __future__ import annotations

from pathlib import Path

from app.catalog.db import migrate, transaction
from app.catalog.rebuild import RebuildReport, rebuild_catalog
from app.context import Context


def rebuilt_context(ctx: Context, place: Path) -> tuple[Context, RebuildReport]:
    """A Context over the same storage and key whose catalog (SQLite in `place`) was rebuilt from storage."""
    place.mkdir(parents=True, mode=0o700)
    settings = ctx.settings.model_copy(update={"database_url": f"sqlite:///{place / 'catalog.sqlite3'}"})
    rebuilt = Context(settings)
    migrate(rebuilt.engine)
    with transaction(rebuilt.sessions) as session:
        report = rebuild_catalog(session, rebuilt.repository)
    return rebuilt, report
