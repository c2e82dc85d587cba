"""`equisplit-dr compliance report` (docs/REPORTS.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.commands import handles_errors
from app.cli.commands import open_system as _system
from app.cli.render import console

compliance_app = typer.Typer(no_args_is_help=True, help="Compliance evidence: SOC 2, GDPR, retention.")




@compliance_app.command("report")
@handles_errors
def compliance_report(
    report_type: Annotated[str, typer.Option("--type", help="soc2, gdpr or retention.")],
    start: Annotated[
        str, typer.Option("--from", help="Start: an ISO time, or 30d / 24h before now.")
    ] = "30d",
    end: Annotated[str | None, typer.Option("--to", help="End: an ISO time (default: now).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="html or json.")] = "json",
    output: Annotated[Path | None, typer.Option("--output", help="Write the report to this file.")] = None,
) -> None:
    """Evidence per control for a period, with charts in the HTML (drawn offline). Exit 1 when a
    control fails; a control with no evidence in the period is said so, never passed."""
    from app import clock
    from app.reports.build import build_report, render
    from app.timespec import parse_since

    with _system() as system:
        report = build_report(
            system.context, report_type, parse_since(start), parse_since(end) if end else clock.now()
        )
        text = render(report, fmt)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(
            f"{report_type} report ({fmt}) written to {output}: overall {report['overall']}", highlight=False
        )
    if report["overall"] == "fail":
        raise typer.Exit(1)
