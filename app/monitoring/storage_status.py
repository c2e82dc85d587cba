"""What storage holds (`backup storage-status`): objects and bytes per kind and per storage class, read
by listing storage itself (paged by the backend), the catalog's view beside it, and the free space
where the backend can tell (a local directory)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import func, select

from app.catalog.models import Backup, Pack
from app.context import Context
from app.repo.format import Kind

KINDS = (Kind.KEYS, Kind.CONFIG, Kind.PACKS, Kind.MANIFESTS, Kind.WAL, Kind.UNITS)


def storage_status(ctx: Context) -> dict[str, Any]:
    storage = ctx.storage
    kinds: dict[str, dict[str, int]] = {}
    classes: dict[str, dict[str, int]] = {}
    for kind in KINDS:
        count = size = 0
        for info in storage.list(kind):
            count += 1
            size += info.size
            bucket = classes.setdefault(info.storage_class or "STANDARD", {"objects": 0, "bytes": 0})
            bucket["objects"] += 1
            bucket["bytes"] += info.size
        kinds[kind] = {"objects": count, "bytes": size}
    with ctx.sessions() as session:
        catalog = {
            "packs": int(session.scalar(select(func.count()).select_from(Pack)) or 0),
            "pack_bytes": int(session.scalar(select(func.coalesce(func.sum(Pack.size), 0))) or 0),
            "backups": int(session.scalar(select(func.count()).select_from(Backup)) or 0),
        }
    total = sum(k["bytes"] for k in kinds.values())
    status: dict[str, Any] = {
        "location": storage.location,
        "objects": sum(k["objects"] for k in kinds.values()),
        "bytes": total,
        "kinds": kinds,
        "storage_classes": classes,
        "catalog": catalog,
        "free_bytes": None,
        "capacity_bytes": None,
        "used_percent": None,
    }
    root = local_root(ctx.settings.storage_url)
    if root is not None:
        usage = shutil.disk_usage(root if root.exists() else root.parent)
        status.update(
            free_bytes=usage.free,
            capacity_bytes=usage.total,
            used_percent=round(100 * (usage.total - usage.free) / usage.total, 1) if usage.total else None,
        )
    return status


def local_root(url: str) -> Path | None:
    """The directory of a local storage URL; None for a remote backend."""
    if url.startswith("/"):
        return Path(url)
    parts = urlsplit(url)
    return Path(unquote(parts.path)) if parts.scheme == "file" else None
