"""Entry point of the `equisplit-dr` command. Every command maps domain errors to their exit codes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.audit_commands import approval_app, audit_app
from app.cli.commands import handles_errors, open_scheduler, open_system
from app.cli.dr_commands import dr_app
from app.cli.drill_commands import drill_command
from app.cli.gdpr_commands import gdpr_app
from app.cli.maintenance_commands import maintenance_app
from app.cli.monitoring_commands import monitoring_app
from app.cli.pg_commands import pg_app
from app.cli.probe_commands import storage_status_command, test_connection_command
from app.cli.render import JsonOpt, backups_table, console, err_console, human, print_json, progress_bar
from app.cli.replication_commands import replication_app
from app.cli.report_commands import compliance_app
from app.cli.retention_commands import gc_app, hold_app, retention_app
from app.cli.verify_commands import verify_command
from app.cli.wal_commands import wal_app
from app.errors import ConfigurationError, PartialBackupError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Encrypted, deduplicating backup and DR.",
)
source_app = typer.Typer(no_args_is_help=True, help="Register and list backup sources.")
backup_app = typer.Typer(no_args_is_help=True, help="Run, list and inspect backups.")
keys_app = typer.Typer(no_args_is_help=True, help="Manage the repository's keys.")
catalog_app = typer.Typer(no_args_is_help=True, help="Maintain the catalog.")
schedule_app = typer.Typer(no_args_is_help=True, help="The recurring jobs beat runs.")
job_app = typer.Typer(no_args_is_help=True, help="Jobs in the catalog's ledger.")
app.add_typer(source_app, name="source")
app.add_typer(backup_app, name="backup")
app.add_typer(keys_app, name="keys")
app.add_typer(catalog_app, name="catalog")
app.add_typer(wal_app, name="wal")
app.add_typer(schedule_app, name="schedule")
app.add_typer(job_app, name="job")
app.add_typer(dr_app, name="dr")
app.add_typer(pg_app, name="pg")
app.add_typer(retention_app, name="retention")
app.add_typer(hold_app, name="hold")
app.add_typer(audit_app, name="audit")
app.add_typer(approval_app, name="approval")
app.add_typer(compliance_app, name="compliance")
app.add_typer(gdpr_app, name="gdpr")
app.add_typer(replication_app, name="replication")
app.add_typer(gc_app, name="gc")
app.add_typer(monitoring_app, name="monitoring")
backup_app.command("verify")(verify_command)
dr_app.command("test")(drill_command)
backup_app.command("test-connection")(test_connection_command)
backup_app.command("storage-status")(storage_status_command)
app.add_typer(maintenance_app, name="maintenance")

SourceOpt = Annotated[str | None, typer.Option("--source", "-s", help="Source name.")]


_scheduler = open_scheduler
_system = open_system


@app.command()
@handles_errors
def init() -> None:
    """Create the repository and migrate the catalog (idempotent)."""
    with _system() as system:
        report = system.init()
        console.print(
            ("created" if report.created_repository else "opened existing")
            + f" repository {report.repository_id} at {system.context.storage.location}"
        )
        console.print(f"catalog at {system.settings.catalog_url.split('@')[-1]}")
        if report.generated_key_file:
            err_console.print(
                f"[yellow]generated a master key in {report.generated_key_file}: keep a copy "
                "somewhere safe and apart from the backups; without it nothing can be restored[/]"
            )


@source_app.command("add")
@handles_errors
def source_add(
    name: str,
    path: Annotated[Path | None, typer.Option("--path", help="Directory to back up.")] = None,
    postgres: Annotated[
        str | None,
        typer.Option("--postgres", help="A PostgreSQL cluster's DSN (stored without its password)."),
    ] = None,
    pgdata: Annotated[
        Path | None, typer.Option("--pgdata", help="With --postgres: the cluster's data directory.")
    ] = None,
    queue: Annotated[
        str | None, typer.Option("--queue", help="Queue of this source's units (workers that can read it).")
    ] = None,
) -> None:
    """Register a directory (--path) or a PostgreSQL cluster (--postgres) as a backup source."""
    if (path is None) == (postgres is None):
        raise ConfigurationError("give exactly one of --path DIR and --postgres DSN")
    if pgdata is not None and postgres is None:
        raise ConfigurationError("--pgdata goes with --postgres")
    with _system() as system:
        if path is not None:
            info = system.add_source(name, path, queue=queue)
            console.print(f"source {info['name']} -> {info['path']} (units on queue {info['queue']})")
            return
        assert postgres is not None
        info = system.add_postgres_source(name, postgres, pgdata)
        console.print(f"source {info['name']} -> PostgreSQL {info['dsn']}", highlight=False)


@source_app.command("list")
@handles_errors
def source_list(as_json: JsonOpt = False) -> None:
    with _system() as system:
        rows = system.list_sources()
    if as_json:
        print_json(rows)
    else:
        for r in rows:
            console.print(f"{r['name']}\t{r['kind']}\t{r['path'] or ''}")


@backup_app.command("run")
@handles_errors
def backup_run(
    source: SourceOpt = None,
    type_: Annotated[
        str, typer.Option("--type", "-t", help="full|incremental|differential|archive")
    ] = "incremental",
    checksum: Annotated[
        bool,
        typer.Option(
            "--checksum", help="Re-read every file, whatever the change rule says (dedup by content)."
        ),
    ] = False,
    allow_shrink: Annotated[
        bool,
        typer.Option(
            "--allow-shrink",
            help="Confirm that the source shrank on purpose since its last complete backup "
            "(by more than BACKUP_SHRINK_WARN_PERCENT, or to nothing): the backup is not partial for it.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Back up a source now (a PostgreSQL source: a base backup of the whole cluster). Exit 0 when
    complete, 16 when partial (each file not stored as found is named, with why)."""
    with _system() as system, progress_bar("backup", not as_json) as progress:
        result = system.create_backup(
            source, type_, progress, checksum=checksum or None, allow_shrink=allow_shrink
        )
        info = system.show_backup(result.id, audited=False)
    if as_json:
        print_json(info)
        _report_problems(result)
        return
    console.print(
        f"backup {result.id} of {result.source}: {result.type}, {result.state}; "
        f"{result.stats['files']} files, read {human(result.stats['bytes_read'])}, "
        f"new {human(result.stats['bytes_new'])}, stored {human(result.stats['bytes_stored'])}"
    )
    _report_problems(result)


def _report_problems(result: Any) -> None:
    """Name every file not backed up and every warning on stderr (JSON or not). A partial backup is
    recorded and restorable, but not what was asked: say so last, and exit with its own code."""
    for e in result.errors:
        err_console.print(f"[yellow]not backed up:[/] {e['path']}: {e['error']}", highlight=False)
    for w in result.warnings:
        err_console.print(f"[yellow]warning:[/] {w['path']}: {w['warning']}", highlight=False)
    if result.state != "partial":
        return
    err_console.print(
        f"[bold yellow]partial:[/] backup {result.id} of {result.source} is partial: "
        f"{len(result.errors)} error(s), {len(result.warnings)} warning(s) above "
        f"(`equisplit-dr backup show {result.id}` lists them again)",
        highlight=False,
    )
    raise typer.Exit(PartialBackupError.exit_code)


@backup_app.command("list")
@handles_errors
def backup_list(source: SourceOpt = None, as_json: JsonOpt = False) -> None:
    with _system() as system:
        rows = system.list_backups(source)
    if as_json:
        print_json(rows)
    else:
        console.print(backups_table(rows))


@backup_app.command("show")
@handles_errors
def backup_show(
    backup_id: str,
    source: SourceOpt = None,
    as_json: JsonOpt = False,
    files: Annotated[bool, typer.Option("--files", help="List the backup's files.")] = False,
) -> None:
    """Show one backup (an id, or `latest` with --source)."""
    with _system() as system:
        info = system.show_backup(backup_id, source, files=files)
    if as_json:
        print_json(info)
        return
    for key, value in info.items():
        if key != "entries":
            console.print(f"{key:>14}: {value}", highlight=False)
    for e in info.get("entries", []):
        console.print(
            f"{e['type']:>8} {human(e['size']) if e['type'] == 'file' else '':>10}  {e['path']}",
            highlight=False,
        )


@backup_app.command("status")
@handles_errors
def backup_status(
    since: Annotated[str, typer.Option("--since", help="24h, 7d, or an ISO time.")] = "24h",
    as_json: JsonOpt = False,
) -> None:
    """Jobs since a time: state, source, backup, progress, error."""
    from app.timespec import parse_since

    with _scheduler() as scheduler:
        rows = scheduler.job_status(parse_since(since))
    if as_json:
        print_json(rows)
        return
    for r in rows:
        p = r["progress"] or {}
        done = f"{p.get('units_done', 0)}/{p.get('units', '?')} units" if "units" in p else ""
        console.print(
            f"{r['created_at'][:19]}  {r['job_id']}  {r['kind']:<8} {r['state']:<10} "
            f"{r['source'] or '-':<12} {r['backup_id'] or '-':<24} {r['seconds']:>7}s {done} "
            f"{r['error'] or ''}",
            highlight=False,
        )


@backup_app.command("logs")
@handles_errors
def backup_logs(
    last: Annotated[str, typer.Option("--last", help="24h, 7d, or an ISO time.")] = "24h",
    as_json: JsonOpt = False,
) -> None:
    """The audit trail: who did what, when, with each failure's error."""
    from app.timespec import parse_since

    # Nothing is appended to a trail that does not verify (not even this read, nor the configuration):
    # a truncated trail must stay a prefix of the anchored one for `catalog rebuild` to extend it.
    with _scheduler(audited=False) as scheduler:
        since = parse_since(last)
        rows = scheduler.job_logs(since, audited=False)
        with _system(audited=False) as system:
            check = system.verify_audit_trail(need_anchor=False)
        if check.ok:
            scheduler.record_logs_access(since, len(rows))
    # Entries from the first bad one on are not verified; a truncated trail leaves none verified.
    first_bad = check.problem.entry_id if check.problem and check.problem.kind not in ("truncated", "rewritten") else None
    for r in rows:
        r["verified"] = check.ok or (first_bad is not None and r["id"] < first_bad)
    if check.problem is not None:
        err_console.print(f"[bold red]UNVERIFIED audit trail:[/] {check.problem.message}", highlight=False)
    if as_json:
        print_json(rows)
        return
    for r in rows:
        console.print(
            f"{'' if r['verified'] else '! '}{r['at'][:19]}  {r['actor']:<24} {r['action']:<18} "
            f"{r['object'] or '-'}  {r['detail']}",
            highlight=False,
        )


@job_app.command("cancel")
@handles_errors
def job_cancel(job_id: str) -> None:
    """Cancel a pending or running job; its workers stop at their next file."""
    with _scheduler() as scheduler:
        result = scheduler.cancel_job(job_id)
    console.print(f"job {result['job_id']}: {result['state']}")


@schedule_app.command("show")
@handles_errors
def schedule_show(as_json: JsonOpt = False) -> None:
    """The effective schedule with its next run times."""
    with _scheduler() as scheduler:
        rows = scheduler.schedule()
    if as_json:
        print_json(rows)
        return
    for r in rows:
        console.print(f"{r['name']:<20} {r['description']}", highlight=False)
        console.print(
            f"{'':<20} next: {', '.join(r['next_runs'])}  (task {r['task']}, queue {r['queue']})",
            highlight=False,
        )


@dr_app.command("health-check")
@handles_errors
def health_check(as_json: JsonOpt = False) -> None:
    """The health status: healthy, warning or critical, with every issue. Exit 1 unless healthy."""
    with _scheduler() as scheduler:
        health = scheduler.get_health_status()
    if as_json:
        print_json(health.to_json())
    else:
        console.print(f"status: {health.status}")
        for issue in health.issues:
            console.print(f"  {issue.severity}: {issue.source or '-'}: {issue.message}", highlight=False)
    if health.status != "healthy":
        raise typer.Exit(1)


@app.command()
@handles_errors
def restore(
    backup_id: str,
    target: Annotated[Path, typer.Option("--target", help="Directory to restore into.")],
    source: SourceOpt = None,
    path: Annotated[
        list[str] | None, typer.Option("--path", help="Restore only this path (repeatable).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check and report; write nothing.")] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace what a non-empty target holds where the backup has an entry."
        ),
    ] = False,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Restore only what a non-empty target is missing.")
    ] = False,
    keep_partial: Annotated[
        bool, typer.Option("--keep-partial", help="Keep half-written files on error.")
    ] = False,
    from_region: Annotated[
        str | None,
        typer.Option("--from-region", help="Read the backup from this secondary region, not the primary."),
    ] = None,
    approval: Annotated[
        int | None, typer.Option("--approval", help="A granted approval id (when DR_APPROVAL_REQUIRED has restore).")
    ] = None,
    request_only: Annotated[
        bool,
        typer.Option(
            "--request-only",
            help="An archive in GLACIER or DEEP_ARCHIVE: request the thaw of its packs and return; write nothing.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Restore a backup (an id, or `latest` with --source) into a directory."""
    quiet = as_json or dry_run or request_only
    with _system(from_region) as system, progress_bar("restore", not quiet) as progress:
        plan = system.restore(
            backup_id,
            target,
            source=source,
            paths=path,
            dry_run=dry_run,
            overwrite=overwrite,
            skip_existing=skip_existing,
            keep_partial=keep_partial,
            progress=progress,
            approval=approval,
            request_only=request_only,
        )
    if request_only:
        thaw = plan.thaw or {"packs": 0, "requested": 0, "already_thawing": 0, "pending": []}
        if as_json:
            print_json({"backup": plan.backup_id, "thaw": thaw})
        else:
            console.print(
                f"backup {plan.backup_id}: thaw requested for {thaw['requested']} pack(s), "
                f"{thaw['already_thawing']} already thawing, {len(thaw['pending'])} of {thaw['packs']} "
                "not readable yet; run the restore again once they are"
            )
        return
    summary = {
        "backup": plan.backup_id,
        "source": plan.source,
        "target": str(target),
        "dry_run": dry_run,
        "files": plan.files,
        "dirs": plan.dirs,
        "symlinks": plan.symlinks,
        "hardlinks": plan.hardlinks,
        "specials": plan.specials,
        "bytes": plan.bytes,
        "packs": plan.packs,
        "warnings": plan.warnings,
        "skipped": plan.skipped,
        "replaced": plan.replaced,
        "thaw": plan.thaw,
    }
    if as_json:
        print_json(summary)
    else:
        verb = "would restore" if dry_run else "restored"
        existing = f"; {plan.skipped} already there, left as they are" if plan.skipped else ""
        existing += f"; {plan.replaced} already there, replaced" if plan.replaced else ""
        console.print(
            f"{verb} {plan.files} files ({human(plan.bytes)}), {plan.dirs} directories, "
            f"{plan.symlinks} symlinks, {plan.hardlinks} hard links, {plan.specials} special files "
            f"from backup {plan.backup_id} into {target}{existing}"
        )
        for warning in plan.warnings:
            console.print(f"  warning: {warning['path']}: {warning['warning']}", highlight=False)


@keys_app.command("rotate")
@handles_errors
def keys_rotate(
    new_key_file: Annotated[
        Path | None,
        typer.Option(
            "--new-key-file", help="File holding the new master key (64 hex). Default: generate one."
        ),
    ] = None,
    keep_data_key: Annotated[
        bool, typer.Option("--keep-data-key", help="Do not start a new data key.")
    ] = False,
) -> None:
    """Wrap the repository's keys under a new master key; old backups stay restorable."""
    from app.repo.keys import MasterKey

    new: MasterKey | None = None
    origin: str | None = None
    if new_key_file is not None:
        new, origin = MasterKey.from_file(new_key_file), f"file {new_key_file.absolute()}"
    elif os.environ.get("BACKUP_NEW_ENCRYPTION_KEY"):
        new = MasterKey.from_hex(os.environ["BACKUP_NEW_ENCRYPTION_KEY"], origin="BACKUP_NEW_ENCRYPTION_KEY")
        origin = "BACKUP_NEW_ENCRYPTION_KEY"
    with _system() as system:
        done = system.rotate_keys(new, new_data_key=not keep_data_key, new_key_origin=origin)
    if done.finished_interrupted:
        console.print("finished a key rotation that was interrupted after the keyring was re-wrapped")
    if done.key_file is not None:
        console.print(f"new master key written to {done.key_file}")
    else:
        console.print("keys re-wrapped: set BACKUP_ENCRYPTION_KEY (or _FILE) to the new key everywhere now")
    console.print(f"current data key {done.repository.keyring.current_key_id.hex()}")


@catalog_app.command("rebuild")
@handles_errors
def catalog_rebuild(
    as_json: JsonOpt = False,
    from_region: Annotated[
        str | None,
        typer.Option("--from-region", help="Rebuild from this secondary region's copy (the primary is gone)."),
    ] = None,
) -> None:
    """Rebuild the catalog from storage alone (no `init` needed); a damaged SQLite catalog is kept aside."""
    with _system(from_region) as system:
        report = system.rebuild_catalog()
    data = {
        "packs": report.packs,
        "chunks": report.chunks,
        "backups": report.backups,
        "jobs_created": report.jobs_created,
        "wal_files": report.wal_files,
        "sources_created": report.sources_created,
        "damaged_catalog": report.damaged_catalog,
        "unreadable": report.unreadable,
        "audit": report.audit,
    }
    if report.damaged_catalog:
        err_console.print(
            f"[yellow]the catalog was damaged ({report.damage}); it was kept as {report.damaged_catalog}[/]",
            highlight=False,
        )
    if as_json:
        print_json(data)
    else:
        console.print(
            f"indexed {report.packs} packs ({report.chunks} chunks), {report.backups} backups "
            f"and {report.wal_files} WAL files"
        )
        for item in report.unreadable:
            err_console.print(f"[yellow]unreadable:[/] {item}", highlight=False)
        for note in (report.audit or {}).get("notes", []):
            err_console.print(f"[yellow]audit trail:[/] {note}", highlight=False)
    if report.unreadable:
        raise typer.Exit(5)


@app.command()
@handles_errors
def demo(
    home: Annotated[Path | None, typer.Option(help="Data directory for the demo (default: ./.demo).")] = None,
) -> None:
    """Back up a generated tree, change it, back it up again, restore, and prove the restore is equal."""
    from app.cli.demo import run_demo

    if not run_demo(home or Path(".demo")):
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
