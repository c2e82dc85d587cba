"""`equisplit-dr gdpr erase|list`: the erasure ledger (docs/GDPR.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.commands import handles_errors
from app.cli.commands import open_system as _system
from app.cli.render import JsonOpt, console, print_json

gdpr_app = typer.Typer(no_args_is_help=True, help="GDPR erasure requests, re-applied by every restore.")




@gdpr_app.command("erase")
@handles_errors
def gdpr_erase(
    source: Annotated[str, typer.Option("--source", "-s", help="The PostgreSQL source.")],
    database: Annotated[str, typer.Option("--database", help="The database that holds the subject.")],
    subject: Annotated[str, typer.Option("--subject", help="Who is forgotten (an id, not the data).")],
    sql: Annotated[
        str, typer.Option("--sql", help="The SQL that erases the subject, run in one transaction.")
    ],
    reason: Annotated[str, typer.Option("--reason", help="Why (the request's reference).")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Record an erasure request. Backups stay as they are; every restore, recovery and drill of the
    source re-applies the SQL before the database is handed back. Erase in production yourself."""
    with _system() as system:
        row = system.record_erasure(source, database, subject, sql, reason)
    if as_json:
        print_json(row)
    else:
        console.print(f"erasure {row['id']} recorded: {subject} in {source}/{database}", highlight=False)


@gdpr_app.command("list")
@handles_errors
def gdpr_list(
    source: Annotated[str | None, typer.Option("--source", "-s", help="Only this source.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every erasure request, oldest first (the order they are re-applied in)."""
    with _system() as system:
        rows = system.list_erasures(source)
    if as_json:
        print_json(rows)
        return
    for r in rows:
        console.print(
            f"{r['id']:>4}  {r['requested_at'][:19]}  {r['source']}/{r['database']}  {r['subject']}  "
            f"by {r['requested_by']}: {r['reason']}\n      {r['sql']}",
            highlight=False,
        )
