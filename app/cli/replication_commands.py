"""`equisplit-dr replication`: copy the repository to the secondary regions, and their status
(docs/REPLICATION.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.commands import handles_errors
from app.cli.render import JsonOpt, console, err_console, human, print_json
from app.errors import ConfigurationError, ReplicationError

replication_app = typer.Typer(no_args_is_help=True, help="Copies of the repository in secondary regions.")
RegionOpt = Annotated[str | None, typer.Option("--region", help="One secondary region (default: every one).")]


@replication_app.command("run")
@handles_errors
def replication_run(region: RegionOpt = None, as_json: JsonOpt = False) -> None:
    """A pass over each region: keyring and config, then new packs and WAL, then the manifests whose packs
    are all there. Exit 4 naming each region that could not be brought up to date."""
    from app.context import Context
    from app.replication.regions import is_enabled
    from app.replication.run import replicate
    from app.settings import load_settings

    settings = load_settings()
    if region is None and not is_enabled(settings):
        raise ConfigurationError(
            "replication is off: BACKUP_CROSS_REGION is false or no secondary region is configured",
            hint="set BACKUP_CROSS_REGION=true and SECONDARY_REGIONS / BACKUP_SECONDARY_STORAGE_URLS",
        )
    ctx = Context(settings)
    try:
        passes = replicate(ctx, region, actor="cli")
    finally:
        ctx.close()
    if as_json:
        print_json([p.to_json() for p in passes])
    else:
        for p in passes:
            if p.busy:
                console.print(f"region {p.region}: a pass is already running, skipped", highlight=False)
                continue
            console.print(
                f"region {p.region}: {p.copied} copied ({human(p.bytes_copied)}), {p.present} already there, "
                f"{p.failed} failed, {p.missing} missing in the primary, {p.manifests_held} manifest(s) "
                f"waiting for their packs, in {p.seconds:.1f} s",
                highlight=False,
            )
            if p.error:
                err_console.print(f"[bold red]error:[/] region {p.region}: {p.error}", highlight=False)
    if any(p.error for p in passes):
        raise typer.Exit(ReplicationError.exit_code)


@replication_app.command("status")
@handles_errors
def replication_status_command(region: RegionOpt = None, as_json: JsonOpt = False) -> None:
    """Per region: objects and bytes pending, copied, failed and missing, the lag (age of the oldest object
    not yet copied) against BACKUP_REPLICATION_LAG_TARGET, the last pass and its error. Exit 1 when a
    region's lag is past the target."""
    from app.context import Context
    from app.replication.status import replication_status
    from app.settings import load_settings

    ctx = Context(load_settings())
    try:
        statuses = replication_status(ctx, region)
    finally:
        ctx.close()
    if as_json:
        print_json([s.to_json() for s in statuses])
    else:
        if not statuses:
            console.print("replication is off (BACKUP_CROSS_REGION=false or no secondary region)")
        for s in statuses:
            flag = " [red](past the target)[/]" if s.lag_exceeded else ""
            console.print(f"region {s.region} ({s.location})", highlight=False)
            console.print(f"  lag {s.lag_seconds} s, target {s.lag_target_seconds} s{flag}")
            for state in ("pending", "copied", "failed", "damaged", "missing"):
                console.print(
                    f"  {state}: {s.objects[state]} objects, {human(s.bytes[state])}", highlight=False
                )
            last = s.last_pass_at.isoformat() if s.last_pass_at else "never"
            console.print(
                f"  last pass: {last}" + (f", error: {s.last_error}" if s.last_error else ""), highlight=False
            )
            for w in s.waiting:
                console.print(f"  {w['object']}: pending since {w['since']}: {w['reason']}", highlight=False)
            for e in s.errors:
                err_console.print(
                    f"  {e['object']}: {e['error']} ({e['attempts']} attempt(s))", highlight=False
                )
    if any(s.lag_exceeded for s in statuses):
        raise typer.Exit(1)
