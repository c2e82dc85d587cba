"""Output helpers for the CLI: JSON, tables, sizes and a progress bar with MB/s."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, cast

import typer

from app.errors import EquisplitError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


class _LazyConsole:
    """A rich Console made on first use: a command that prints JSON alone (`backup run --json`, as
    scripts and the benchmarks run it) does not import rich, ~0.02 CPU-s of every such process."""

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def real(self) -> Console:
        if self._console is None:
            from rich.console import Console

            if self._stderr:
                self._console = Console(stderr=True)
            else:  # wide when piped, so tables stay readable in logs and CI output
                self._console = Console() if sys.stdout.isatty() else Console(width=160)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)


console = cast("Console", _LazyConsole())
err_console = cast("Console", _LazyConsole(stderr=True))

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def fail(exc: EquisplitError) -> NoReturn:
    """Print a domain error (message, detail, hint) on stderr and exit with its exit code."""
    from rich.markup import escape

    # escaped: a message may hold brackets (`s3://bucket[/prefix]`) that are not console markup
    err_console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
    if exc.detail:
        err_console.print(f"  detail: {escape(exc.detail)}", highlight=False)
    if exc.hint:
        err_console.print(f"  hint: {escape(exc.hint)}", highlight=False)
    raise typer.Exit(exc.exit_code) from None


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def human(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def backups_table(rows: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(show_lines=False)
    for col in (
        "id",
        "source",
        "type",
        "state",
        "started",
        "files",
        "size",
        "read",
        "new",
        "stored",
        "dedup",
    ):
        table.add_column(
            col, justify="right" if col in ("files", "size", "read", "new", "stored", "dedup") else "left"
        )
    for r in rows:
        table.add_row(
            r["id"],
            r["source"],
            r["type"],
            "DAMAGED" if r.get("damaged") else r["state"],
            (r["started_at"] or "")[:19].replace("T", " "),
            str(r["files"]),
            human(r["bytes_total"]),
            human(r["bytes_read"]),
            human(r["bytes_new"]),
            human(r["bytes_stored"]),
            f"{r['dedup_ratio']}x" if r["dedup_ratio"] else "-",
        )
    return table


@contextmanager
def progress_bar(label: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A callback (done, total) drawing a bar with MB/s on stderr, or None when disabled."""
    if not enabled or not err_console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=cast(_LazyConsole, err_console).real(),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update
