"""`equisplit-dr dr test`: restore drills that measure the RTO (docs/DRILLS.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.commands import handles_errors
from app.cli.render import JsonOpt, console, err_console, human, print_json
from app.drills.result import DrillResult
from app.errors import ConfigurationError, RecoveryError


@handles_errors
def drill_command(
    source: Annotated[str | None, typer.Option("--source", "-s", help="Drill this source only.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan each drill; write nothing.")] = False,
    full_simulation: Annotated[
        bool, typer.Option("--full-simulation", help="Rebuild a scratch catalog from storage alone first.")
    ] = False,
    owner: Annotated[
        str | None,
        typer.Option("--owner", help="OS user that runs a recovered PostgreSQL (as root: postgres)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Restore the latest backup of each source to a scratch place, check it (files against the manifest;
    a PostgreSQL copy started, pg_amcheck'ed and its rows counted), time it against RTO_TARGET and
    record it. Exit 15 if a drill failed or missed the RTO target."""
    from app.settings import load_settings
    from app.system import BackupSystem

    if dry_run and full_simulation:
        raise ConfigurationError("--dry-run and --full-simulation exclude each other", hint="give one")
    mode = "dry-run" if dry_run else "full-simulation" if full_simulation else "restore"
    with BackupSystem(load_settings()) as system:
        results = system.run_restore_drills(source, mode=mode, owner=owner)
    if as_json:
        print_json([r.to_json() for r in results])
    else:
        for result in results:
            _print(result)
    if any(r.outcome == "failed" or r.within_target is False for r in results):
        raise typer.Exit(RecoveryError.exit_code)


def _print(r: DrillResult) -> None:
    if r.outcome == "planned":
        console.print(f"{r.source}: plan", highlight=False)
    elif r.outcome == "passed":
        verdict = "within" if r.within_target else "[bold red]OVER[/]"
        console.print(
            f"{r.source}: drill {r.id} passed: backup {r.backup_id}, {r.files} file(s) {human(r.bytes)}, "
            f"RTO {r.rto_seconds:.1f} s ({verdict} the target of {r.rto_target_seconds} s), "
            f"point reached {str(r.point_reached)[:19]}, RPO {r.rpo_seconds or 0:.0f} s",
            highlight=False,
        )
    else:
        err_console.print(f"[bold red]{r.source}: drill {r.id} FAILED[/]: {r.error or ''}", highlight=False)
    for line in r.checks:
        console.print(f"  {line}", highlight=False)
    for problem in r.problems:
        err_console.print(f"  problem: {problem}", highlight=False)
