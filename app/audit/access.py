"""Data access in the audit trail: a command that reveals what a backup holds (its files, its manifest)
or what the trail and the erasure ledger say appends one `data.accessed` entry naming what was read
(docs/AUDIT.md section 7). One insert: reading stays cheap."""

from __future__ import annotations

from typing import Any

from app.catalog import audit
from app.catalog.db import transaction
from app.context import Context

ACCESSED = "data.accessed"


def record_access(ctx: Context, obj: str | None, read: str, actor: str | None = None, **detail: Any) -> None:
    """Append `data.accessed` for `obj` (a backup id, `audit_log`, `erasures`); `read` says what was shown."""
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        audit.append(session, ACCESSED, obj, {"read": read, **detail}, actor)
