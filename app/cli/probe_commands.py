"""`equisplit-dr backup test-connection` and `backup storage-status`: the runbook's first checks."""

from __future__ import annotations

import typer

from app.cli.commands import handles_errors
from app.cli.render import JsonOpt, console, err_console, human, print_json


@handles_errors
def test_connection_command(as_json: JsonOpt = False) -> None:
    """Write, read back and delete an object in storage; reach the catalog, the broker and each
    PostgreSQL source. Exit 1 if any check fails."""
    from app.settings import load_settings
    from app.system import BackupSystem

    with BackupSystem(load_settings()) as system:
        probes = system.test_connection()
    if as_json:
        print_json([p.to_json() for p in probes])
    else:
        for p in probes:
            mark = "ok" if p.ok else "-" if p.ok is None else "[bold red]FAILED[/]"
            (console if p.ok is not False else err_console).print(
                f"{p.name:<20} {mark:<6} {p.seconds * 1000:7.0f} ms  {p.detail}", highlight=False
            )
    if any(p.ok is False for p in probes):
        raise typer.Exit(1)


@handles_errors
def storage_status_command(as_json: JsonOpt = False) -> None:
    """Objects and bytes in storage per kind and per storage class, the catalog's view beside it, and
    the free space where the backend can tell."""
    from app.settings import load_settings
    from app.system import BackupSystem

    with BackupSystem(load_settings()) as system:
        status = system.storage_status()
    if as_json:
        print_json(status)
        return
    console.print(
        f"{status['location']}: {status['objects']} object(s), {human(status['bytes'])}", highlight=False
    )
    for kind, row in status["kinds"].items():
        console.print(
            f"  {kind:<10} {row['objects']:>8} object(s) {human(row['bytes']):>10}", highlight=False
        )
    for name, row in status["storage_classes"].items():
        console.print(
            f"  class {name:<12} {row['objects']:>6} object(s) {human(row['bytes']):>10}", highlight=False
        )
    cat = status["catalog"]
    console.print(
        f"  catalog: {cat['backups']} backup(s), {cat['packs']} pack(s) of {human(cat['pack_bytes'])}",
        highlight=False,
    )
    if status["free_bytes"] is not None:
        console.print(
            f"  free: {human(status['free_bytes'])} of {human(status['capacity_bytes'])} "
            f"({status['used_percent']}% used)",
            highlight=False,
        )
    else:
        console.print("  free: not known for this backend", highlight=False)
