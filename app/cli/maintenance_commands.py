"""`equisplit-dr maintenance`: reconcile what killed backups left behind (docs/BACKUP.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.commands import handles_errors
from app.cli.render import JsonOpt, console, print_json
from app.settings import load_settings

maintenance_app = typer.Typer(no_args_is_help=True, help="Repository upkeep: reconcile killed backups.")


@maintenance_app.command("reconcile")
@handles_errors
def maintenance_reconcile(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would change; change nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Mark backups whose process died: complete when their manifest is whole in storage, else
    interrupted; delete their unit objects and unfinished writes older than
    BACKUP_RECONCILE_GRACE_SECONDS (each deletion audited)."""
    from app.backup.reconcile import reconcile
    from app.system import BackupSystem

    with BackupSystem(load_settings()) as system:
        report = reconcile(system.context, dry_run=dry_run, actor=system.actor)
    if as_json:
        print_json(report.to_json())
        return
    verb = "would" if dry_run else "did"
    for backup_id, state in report.completed.items():
        console.print(f"{backup_id}: {state} (its manifest is whole in storage)", highlight=False)
    for backup_id, why in report.interrupted.items():
        console.print(f"{backup_id}: interrupted: {why}", highlight=False)
    console.print(
        f"{verb} delete {len(report.deleted_units)} unit objects and "
        f"{len(report.deleted_temporaries)} unfinished writes",
        highlight=False,
    )
