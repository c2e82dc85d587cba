"""Deleting an object in the primary storage and in every secondary region that holds a copy."""

from __future__ import annotations

from app.context import Context
from app.errors import EquisplitError
from app.storage import open_storage


def delete_everywhere(ctx: Context, kind: str, name: str) -> list[str]:
    """Delete from the primary (errors raise) and from each region (errors are returned, named)."""
    ctx.storage.delete(kind, name)
    problems = []
    for region, url in ctx.settings.secondary_storage_urls.items():
        storage = open_storage(url)
        try:
            storage.delete(kind, name)
        except EquisplitError as exc:
            problems.append(f"region {region}: {kind}/{name} not deleted: {exc.message}")
        finally:
            storage.close()
    return problems
