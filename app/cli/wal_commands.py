"""`equisplit-dr wal`: push (archive_command), fetch (restore_command) and status. Thin: push and fetch
are `app/cli/wal_process.py` (which `app/cli/entry.py` also runs without Typer), the work is in app/wal/."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.render import JsonOpt, console, fail, print_json
from app.errors import EquisplitError

if TYPE_CHECKING:
    from app.context import Context

wal_app = typer.Typer(
    no_args_is_help=True,
    help="Archive and restore PostgreSQL WAL: archive_command = 'equisplit-dr wal push %p', "
    "restore_command = 'equisplit-dr wal fetch %f %p'.",
)

SOURCE_ENV = "EQUISPLIT_DR_SOURCE"
SourceOpt = Annotated[
    str, typer.Option("--source", "-s", envvar=SOURCE_ENV, help="The PostgreSQL source.", show_envvar=True)
]


def _context() -> Context:
    from app.context import Context
    from app.settings import load_settings

    return Context(load_settings())


@wal_app.command("push")
def wal_push(
    path: Annotated[Path, typer.Argument(help="The WAL file: PostgreSQL's %p.")],
    source: SourceOpt,
    spool: Annotated[
        Path | None,
        typer.Option("--spool", help="Push spool root (default: .equisplit-dr-push beside PATH)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Name every file archived.")] = False,
) -> None:
    """Archive a WAL file (and files PostgreSQL marked ready); exit 0 only once it is durable and recorded."""
    from app.cli.wal_process import push_command

    raise typer.Exit(push_command(path, source, spool=spool, verbose=verbose))


@wal_app.command("fetch")
def wal_fetch(
    name: Annotated[str, typer.Argument(help="The WAL file name: PostgreSQL's %f.")],
    dest: Annotated[Path, typer.Argument(help="Where to write it: PostgreSQL's %p.")],
    source: SourceOpt,
    spool: Annotated[
        Path | None, typer.Option("--spool", help="Spool root (default: .equisplit-dr-spool beside DEST).")
    ] = None,
    prefetch: Annotated[
        int | None, typer.Option("--prefetch", min=0, help="Segments to fetch ahead (default WAL_PREFETCH).")
    ] = None,
) -> None:
    """Restore a WAL file. Exit 1 silently if it is not archived; above 128 on any other failure."""
    from app.cli.wal_process import fetch_command

    raise typer.Exit(fetch_command(name, dest, source, spool=spool, prefetch=prefetch))


@wal_app.command("status")
def wal_status(
    source: Annotated[
        str | None,
        typer.Option("--source", "-s", envvar=SOURCE_ENV, help="One source (default: every PostgreSQL one)."),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only WAL archived since: an ISO 8601 time or 90m, 24h, 7d.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The archived WAL ranges per timeline, any gap, and the achieved RPO."""
    from app import clock
    from app.timespec import parse_since
    from app.wal.status import wal_status

    try:
        start = parse_since(since, clock.now()) if since else None
        ctx = _context()
        try:
            reports = wal_status(ctx, source, start)
        finally:
            ctx.close()
    except EquisplitError as exc:
        fail(exc)
    if as_json:
        docs = [report.to_json() for report in reports]
        print_json(docs[0] if source is not None else docs)
        return
    for report in reports:
        rpo = "-" if report.rpo_seconds is None else f"{report.rpo_seconds:.1f} s"
        flag = " [red](exceeds MAX_DATA_LOSS_SECONDS)[/]" if report.rpo_exceeded else ""
        console.print(
            f"source {report.source}: newest {report.newest_segment or '-'}, RPO {rpo}{flag}, "
            f"{report.gap_count} gap(s)"
        )
        for timeline in report.timelines:
            tli = f"  timeline {timeline.timeline}:"
            for r in timeline.ranges:
                console.print(f"{tli} {r.first} .. {r.last} ({r.segments} segments)")
            for g in timeline.gaps:
                console.print(f"{tli} [red]gap[/] {g.first} .. {g.last} ({g.segments} missing)")
            for partial in timeline.partial:
                console.print(f"{tli} partial {partial}")
        for history in report.history:
            console.print(f"  history {history}")
    sys.stdout.flush()
