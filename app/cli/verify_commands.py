"""`equisplit-dr backup verify`: read backups back without restoring them (docs/VERIFY.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.commands import handles_errors
from app.cli.render import JsonOpt, console, err_console, human, print_json
from app.errors import ConfigurationError, IntegrityError
from app.verify.report import VerificationReport


@handles_errors
def verify_command(
    backup_id: Annotated[str | None, typer.Option("--id", help="Verify this backup.")] = None,
    source: Annotated[
        str | None, typer.Option("--source", "-s", help="Verify this source's backups.")
    ] = None,
    all_backups: Annotated[bool, typer.Option("--all", help="Verify every backup (the default).")] = False,
    read_data: Annotated[
        bool, typer.Option("--read-data", help="Read back every pack the backups need.")
    ] = False,
    sample: Annotated[
        str | None, typer.Option("--sample", help="Read back this share of the packs, e.g. 25%.")
    ] = None,
    structure_only: Annotated[
        bool, typer.Option("--structure-only", help="Check objects and sizes; read no data.")
    ] = False,
    since: Annotated[
        str | None, typer.Option("--since", help="Only backups since: 24h, 7d, an ISO time.")
    ] = None,
    region: Annotated[
        str | None,
        typer.Option("--region", help="Verify the copies in this secondary region (docs/REPLICATION.md)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check that backups restore: every object they need exists with the expected size; the data of
    new packs and a rotating share of the rest (or --read-data: all, --sample: a share) is read back,
    decrypted and re-hashed. Exit 5 naming every damaged backup, pack and file."""
    from app.settings import load_settings
    from app.system import BackupSystem
    from app.timespec import parse_since
    from app.verify.options import parse_sample

    if sum(bool(x) for x in (backup_id, source, all_backups)) > 1:
        raise ConfigurationError("--id, --source and --all exclude each other", hint="give one of them")
    if sum(bool(x) for x in (read_data, sample, structure_only)) > 1:
        raise ConfigurationError(
            "--read-data, --sample and --structure-only exclude each other", hint="give one of them"
        )
    mode = "all" if read_data else "sample" if sample else "none" if structure_only else "incremental"
    with BackupSystem(load_settings(), region=region) as system:
        report = system.verify_backup(
            backup_id,
            source=source,
            since=parse_since(since) if since else None,
            data=mode,
            sample=parse_sample(sample) if sample else None,
        )
    if as_json:
        print_json(report.to_json())
    else:
        _print(report, region)
    if report.outcome != "passed":
        raise typer.Exit(IntegrityError.exit_code)


def _print(report: VerificationReport, region: str | None = None) -> None:
    rate = f", {report.bytes_read / 1e6 / report.seconds:.1f} MB/s" if report.seconds > 0 else ""
    verdict = "passed" if report.outcome == "passed" else "[bold red]DAMAGE FOUND[/]"
    where = f" of region {region}" if region else ""
    console.print(f"verification {report.id}{where}: {verdict}")
    console.print(
        f"  {len(report.backups)} backup(s) checked, {len(report.damaged)} damaged; "
        f"{report.packs_checked} pack(s) checked, {report.packs_read} read back ({report.data}): "
        f"{human(report.bytes_read)} in {report.seconds:.1f} s{rate}",
        highlight=False,
    )
    for backup in report.backups:
        if backup.healed:
            console.print(f"  backup {backup.backup_id} ({backup.source}) is whole again", highlight=False)
    for backup in report.damaged:
        err_console.print(
            f"[bold red]damaged:[/] backup {backup.backup_id} (source {backup.source})", highlight=False
        )
        for problem in backup.problems:
            err_console.print(f"  {problem.kind}: {problem.object}: {problem.message}", highlight=False)
            if problem.file_count:
                shown = problem.files[:10]
                more = problem.file_count - len(shown)
                err_console.print(
                    f"    {problem.file_count} file(s): {', '.join(shown)}"
                    + (f" and {more} more" if more else ""),
                    highlight=False,
                )
    if report.damaged and region is not None:
        err_console.print(
            f"  hint: the damaged or missing copies in region {region} are queued again; "
            "`equisplit-dr replication run` copies them from the primary",
            highlight=False,
        )
    elif report.damaged:
        err_console.print(
            "  hint: damaged chunks left the chunk index; the next backup of a source that still has the "
            "content stores it again (then verify again), or restore the named packs from a replica",
            highlight=False,
        )
