"""`equisplit-dr pg`: logical exports of one PostgreSQL database (pg_dump) and their import into an
empty database (docs/POSTGRES.md section 5). Thin: the work is in app/logical/."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.render import JsonOpt, console, fail, human, print_json, progress_bar
from app.errors import EquisplitError

pg_app = typer.Typer(
    no_args_is_help=True,
    help="Logical exports of one PostgreSQL database (pg_dump), and their import into an empty database.",
)


@pg_app.command("export")
def pg_export(
    source: Annotated[str, typer.Option("--source", "-s", help="The PostgreSQL source.")],
    database: Annotated[
        str | None, typer.Option("--database", "-d", help="The database to export (default: the DSN's).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Export one database with pg_dump into the repository, as a backup of type `logical`."""
    from app.settings import load_settings
    from app.system import BackupSystem

    try:
        with BackupSystem(load_settings()) as system, progress_bar("export", not as_json) as progress:
            result = system.create_logical_export(source, database, progress)
            info = system.show_backup(result.id, audited=False)
    except EquisplitError as exc:
        fail(exc)
    if as_json:
        print_json(info)
        return
    meta = info.get("logical") or {}
    console.print(
        f"logical export {result.id} of database {meta.get('database')} (source {result.source}): "
        f"dump {human(result.stats['bytes_total'])}, new {human(result.stats['bytes_new'])}, "
        f"stored {human(result.stats['bytes_stored'])}; pg_dump {meta.get('pg_dump_version')}, "
        f"server {meta.get('server_version')}",
        highlight=False,
    )


@pg_app.command("import")
def pg_import(
    backup_id: Annotated[str, typer.Argument(help="A logical export's id, or `latest` with --source.")],
    dsn: Annotated[
        str,
        typer.Option(
            "--dsn",
            help="The empty target database (passwords: ~/.pgpass or PGPASSWORD rather than here).",
        ),
    ],
    source: Annotated[str | None, typer.Option("--source", "-s", help="The PostgreSQL source.")] = None,
    no_privileges: Annotated[
        bool, typer.Option("--no-privileges", help="Leave out GRANT/REVOKE (roles the target lacks).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Import a logical export into an empty database (refused if it holds any table)."""
    from app.settings import load_settings
    from app.system import BackupSystem

    try:
        with BackupSystem(load_settings()) as system, progress_bar("import", not as_json) as progress:
            report = system.restore_logical_export(
                backup_id, dsn, source=source, no_privileges=no_privileges, progress=progress
            )
    except EquisplitError as exc:
        fail(exc)
    doc = {
        "backup": report.backup_id,
        "source": report.source,
        "database": report.database,
        "target_database": report.target_database,
        "bytes": report.bytes,
        "chunks": report.chunks,
        "packs": report.packs,
        "seconds": round(report.seconds, 3),
        "job_id": report.job_id,
    }
    if as_json:
        print_json(doc)
        return
    console.print(
        f"imported export {report.backup_id} of database {report.database} (source {report.source}) into "
        f"database {report.target_database}: {human(report.bytes)} in {report.seconds:.1f} s",
        highlight=False,
    )
