"""`equisplit-dr dr`: disaster recovery. `dr recover` is point-in-time recovery of a PostgreSQL source
(docs/PITR.md); `dr health-check` is registered on the same group by app/cli/main.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.render import console, err_console, fail, human, print_json
from app.errors import EquisplitError

dr_app = typer.Typer(no_args_is_help=True, help="Disaster recovery: health, point-in-time recovery.")


@dr_app.command("recover")
def dr_recover(
    source: Annotated[str, typer.Option("--source", "-s", help="The PostgreSQL source.")],
    target: Annotated[Path, typer.Option("--target", help="An empty or new directory to recover into.")],
    timestamp: Annotated[
        str | None,
        typer.Option(
            "--timestamp", help="Recover to this time (ISO 8601, UTC unless it has an offset), or `latest`."
        ),
    ] = None,
    lsn: Annotated[str | None, typer.Option("--lsn", help="Recover to this WAL position (X/Y).")] = None,
    xid: Annotated[str | None, typer.Option("--xid", help="Recover to this transaction id.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Recover to this restore point.")] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Recover to the end of the archived WAL.")] = False,
    backup: Annotated[str | None, typer.Option("--backup", help="Use this base backup.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and check every WAL file; write nothing.")
    ] = False,
    start: Annotated[
        bool, typer.Option("--start", help="Start the server and wait until recovery has finished.")
    ] = False,
    port: Annotated[int | None, typer.Option("--port", help="Port of the recovered server.")] = None,
    action: Annotated[
        str, typer.Option("--action", help="At the target: promote (default) or pause.")
    ] = "promote",
    restore_command: Annotated[
        str | None,
        typer.Option(
            "--restore-command",
            help="restore_command to write ({source} is replaced); default PITR_RESTORE_COMMAND.",
        ),
    ] = None,
    owner: Annotated[
        str | None,
        typer.Option("--owner", help="OS user that owns and runs the cluster (as root: postgres)."),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option("--user", help="Role to watch recovery as (default: the source DSN's user)."),
    ] = None,
    keep_archiving: Annotated[
        bool,
        typer.Option(
            "--keep-archiving",
            help="Keep the backup's archive_mode (default: off, so a drill never archives).",
        ),
    ] = False,
    timeout: Annotated[int | None, typer.Option("--timeout", help="Seconds to wait for recovery.")] = None,
    tablespace_dir: Annotated[
        Path | None,
        typer.Option(
            "--tablespace-dir", help="Where tablespaces go (<dir>/<oid>); default <target>_tablespaces."
        ),
    ] = None,
    from_region: Annotated[
        str | None,
        typer.Option("--from-region", help="Read the base backup and WAL from this secondary region."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Recover a PostgreSQL source to a point in time from its base backups and archived WAL."""
    from app.pitr.manager import DisasterRecoveryManager

    if action not in ("promote", "pause"):
        fail(EquisplitError("--action is promote or pause"))
    if port is None and start:
        fail(EquisplitError("--start needs --port P (the recovered server must not take the source's port)"))
    try:
        with DisasterRecoveryManager(source=source, actor="cli", region=from_region) as manager:
            result = manager.execute_point_in_time_recovery(
                timestamp,
                dry_run,
                target_dir=target,
                lsn=lsn,
                xid=xid,
                name=name,
                latest=latest,
                backup_id=backup,
                start=start,
                port=port,
                action=action,
                restore_command=restore_command,
                owner=owner,
                user=user,
                keep_archiving=keep_archiving,
                timeout=timeout,
                tablespace_dir=tablespace_dir,
            )
    except EquisplitError as exc:
        fail(exc)
        return
    doc = result.to_json()
    if as_json:
        print_json(doc)
    else:
        _print(doc)
    if not result.success:
        raise typer.Exit(15)


def _print(doc: dict[str, Any]) -> None:
    plan = doc["plan"]
    backup = plan["backup"]
    console.print(
        f"{'plan' if doc['dry_run'] else 'recovery'} of source {plan['source']} to {_target(plan['target'])}",
        highlight=False,
    )
    console.print(
        f"  base backup {backup['id']} ({backup['type']}, timeline {backup['timeline']}, ended "
        f"{backup['stopped_at']} at {backup['stop_lsn']}), {human(plan['restore_bytes'])} to restore",
        highlight=False,
    )
    timelines = " -> ".join(str(t["timeline"]) for t in plan["timelines"])
    console.print(
        f"  WAL: {plan['segments']} segments {plan['first_segment']} .. {plan['last_segment']} "
        f"({human(plan['wal_bytes'])}, {human(plan['wal_stored_bytes'])} stored), timelines {timelines}",
        highlight=False,
    )
    console.print(f"  estimated time: {plan['estimated_seconds']} s", highlight=False)
    for warning in plan["warnings"]:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    for problem in doc["problems"]:
        err_console.print(f"[red]problem:[/] {problem}", highlight=False)
    if doc["dry_run"]:
        console.print("the plan can be carried out" if doc["success"] else "recovery would be refused")
        return
    console.print(f"{'recovered' if doc['success'] else 'FAILED'}: {doc['message']}", highlight=False)
    if doc["started"]:
        console.print(
            f"  reached {doc['restored_timestamp'] or '-'} (timeline {doc['timeline'] or '-'}), "
            f"RTO {doc['rto_seconds'] if doc['success'] else '-'} s (restore {doc['restore_seconds']} s, recovery {doc['recovery_seconds']} s)",
            highlight=False,
        )
    else:
        console.print(f"  restored into {doc['target_dir']} in {doc['rto_seconds'] or '-'} s", highlight=False)


def _target(target: dict[str, Any]) -> str:
    kind = target["kind"]
    return {
        "time": f"time {target['time']}",
        "lsn": f"WAL position {target['lsn']}",
        "xid": f"transaction {target['xid']}",
        "name": f"restore point {target['name']}",
    }.get(kind, "latest")


@dr_app.command("execute")
def dr_execute(
    procedure: Annotated[str, typer.Option("--procedure", help="full-restore or database-failover.")],
    target: Annotated[Path, typer.Option("--target", help="A new or empty directory to restore into.")],
    source: Annotated[
        str | None,
        typer.Option(
            "--source", "-s", help="full-restore: only this source; failover: the PostgreSQL source."
        ),
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="database-failover: the recovered server's port.")
    ] = None,
    approval: Annotated[
        int | None,
        typer.Option("--approval", help="A granted approval id (when DR_APPROVAL_REQUIRED has restore)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the steps; run nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Run a documented runbook (docs/RUNBOOKS.md) step by step; each step's outcome and duration is
    printed, logged and audited. The first failing step stops it (exit 15)."""
    from app.runbooks.procedures import build_steps
    from app.runbooks.run import StepResult, run_procedure
    from app.settings import load_settings
    from app.system import BackupSystem

    def show(step: StepResult) -> None:
        if not as_json:
            console.print(
                f"  {step.outcome:<7} {step.name:<16} {step.seconds or 0:>8.1f} s  {step.detail}",
                highlight=False,
            )

    try:
        with BackupSystem(load_settings()) as system:
            steps = build_steps(
                system, procedure, target.expanduser().absolute(), source=source, port=port, approval=approval
            )
            if not as_json:
                console.print(
                    f"{procedure}: {len(steps)} step(s){' (dry run)' if dry_run else ''}", highlight=False
                )
            result = run_procedure(
                system.context, procedure, steps, dry_run=dry_run, actor=system.actor, on_step=show
            )
    except EquisplitError as exc:
        fail(exc)
    if as_json:
        print_json(result.to_json())
    elif dry_run:
        for step in result.steps:
            console.print(f"  {step.name:<16} {step.description}", highlight=False)
    else:
        for step in result.steps:
            if step.outcome == "skipped":
                console.print(f"  skipped {step.name:<16} (an earlier step failed)", highlight=False)
        console.print(
            f"{procedure} {'succeeded' if result.success else 'FAILED'} in {result.seconds:.1f} s",
            highlight=False,
        )
    if not result.success:
        raise typer.Exit(15)
