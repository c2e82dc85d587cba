"""Re-apply a source's erasure requests to a restored PostgreSQL copy before it is handed back: each
request's SQL in its own transaction, in the order they were recorded, each audited
(`gdpr.reapplied`, or `gdpr.reapply_failed` with the error)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.catalog import audit
from app.catalog.db import transaction
from app.context import Context
from app.gdpr.ledger import erasures_of

#: Run `sql` in one transaction in database `database` of the restored copy: None, or the error.
Runner = Callable[[str, str], str | None]


@dataclass
class ReapplyReport:
    where: str
    applied: list[int] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        return {"where": self.where, "applied": self.applied, "failed": self.failed}

    def describe(self) -> str:
        if self.failed:
            first = self.failed[0]
            return (
                f"{len(self.failed)} erasure request(s) could not be re-applied (first: erasure {first['id']} "
                f"in database {first['database']}: {first['error']}): the restored copy may still hold erased data"
            )
        return f"re-applied {len(self.applied)} erasure request(s)"


def reapply_erasures(
    ctx: Context,
    source: str,
    where: str,
    run: Runner,
    *,
    databases: Callable[[str], str | None] = lambda name: name,
    actor: str | None = None,
) -> ReapplyReport:
    """Run every erasure request of `source` through `run`. `databases` maps a request's database to
    the one to run it in (None: that database is not part of this copy, the request is skipped)."""
    report = ReapplyReport(where)
    with ctx.sessions() as session:
        requests = erasures_of(session, source)
    for request in requests:
        database = databases(request["database"])
        if database is None:
            continue
        error = run(database, request["sql"])
        detail = {
            "erasure": request["id"],
            "source": source,
            "database": database,
            "subject": request["subject"],
        }
        if error is None:
            report.applied.append(request["id"])
        else:
            report.failed.append({"id": request["id"], "database": database, "error": error})
            detail["error"] = error
        with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
            audit.append(
                session, "gdpr.reapplied" if error is None else "gdpr.reapply_failed", where, detail, actor
            )
    return report
