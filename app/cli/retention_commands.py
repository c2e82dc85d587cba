"""`equisplit-dr retention plan|apply` and `equisplit-dr hold add|release|list` (docs/RETENTION.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.commands import handles_errors
from app.cli.commands import open_system as _system
from app.cli.render import JsonOpt, console, err_console, human, print_json

if TYPE_CHECKING:
    from app.gc.run import GcReport

retention_app = typer.Typer(no_args_is_help=True, help="What is kept, and deleting the rest.")
hold_app = typer.Typer(no_args_is_help=True, help="Legal holds: nothing they cover is deleted.")
gc_app = typer.Typer(no_args_is_help=True, help="Garbage collection of packs no kept backup needs.")
SourceOpt = Annotated[str | None, typer.Option("--source", "-s", help="Only this source.")]


RegionOpt = Annotated[
    str | None, typer.Option("--region", help="Only this secondary region's plan (its own policy).")
]


@retention_app.command("plan")
@handles_errors
def retention_plan(source: SourceOpt = None, region: RegionOpt = None, as_json: JsonOpt = False) -> None:
    """Every backup, kept or not, with the rules that keep it; the WAL thinning would remove; and each
    secondary region's own plan (with --region, only that region's)."""
    with _system() as system:
        plan = system.plan_retention(source, region=region)
    if as_json:
        body = plan.to_json()
        print_json(next(r for r in body["regions"] if r["region"] == region) if region else body)
        return
    if region is None:
        for b in plan.backups:
            verdict = "keep  " if b.keep else "[bold red]DELETE[/]"
            why = "; ".join(b.reasons) if b.reasons else "no rule keeps it"
            if b.kept_in:
                why += f" (stays in region {', '.join(b.kept_in)})"
            console.print(f"{verdict} {b.id}  {b.source:<12} {b.type:<12} {why}", highlight=False)
        for w in plan.wal:
            console.print(
                f"WAL of {w.source}: delete {len(w.names)} file(s), {human(w.bytes)}"
                + (f" ({w.names[0]} .. {w.names[-1]})" if w.names else ""),
                highlight=False,
            )
        console.print(f"{len(plan.backups) - len(plan.deletions)} kept, {len(plan.deletions)} to delete")
    for r in plan.regions:
        if region is None and not r.overrides and not any(b.primary_deleted for b in r.backups):
            continue  # it follows the primary's policy and holds nothing the primary lacks
        doomed = {b.id for b in plan.region_deletions(r)}
        rules = ", ".join(f"{k}={v}" for k, v in r.overrides.items()) or "the primary's policy"
        console.print(f"region {r.region} ({rules}):", highlight=False)
        for b in r.backups:
            if b.keep:
                verdict, why = "keep  ", "; ".join(b.reasons) + (" (only here)" if b.primary_deleted else "")
            elif b.id in doomed:
                verdict, why = "[bold red]DELETE[/]", "no rule of this region keeps it"
            else:
                verdict, why = "[bold red]DELETE[/]", "deleted with the primary's copy"
            console.print(f"  {verdict} {b.id}  {b.source:<12} {b.type:<12} {why}", highlight=False)
        console.print(f"  {len(r.backups) - len(r.deletions)} kept, {len(r.deletions)} to delete there")


@retention_app.command("apply")
@handles_errors
def retention_apply(
    source: SourceOpt = None,
    confirm: Annotated[bool, typer.Option("--confirm", help="Delete for real (without: a dry run).")] = False,
    approval: Annotated[
        int | None,
        typer.Option("--approval", help="A granted approval id (when DR_APPROVAL_REQUIRED has delete)."),
    ] = None,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Then collect garbage in the same process (`gc run`); with BACKUP_GC_GRACE_HOURS=0 what "
            "nothing blocks is deleted in this run.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete the backups no rule, hold or window keeps, and the WAL nothing needs; a dry run without
    --confirm. Each deletion is audited with its reason. With --prune, then garbage collection."""
    garbage = None
    with _system() as system:
        plan, report = system.apply_retention(source, confirm=confirm, approval=approval)
        if prune:
            from app.gc.run import collect_garbage

            garbage = collect_garbage(system.context, confirm=confirm, actor=system.actor, sweep_marked=True)
    if as_json:
        print_json(
            {
                "plan": plan.to_json(),
                "applied": report.to_json(),
                "gc": garbage.to_json() if garbage else None,
            }
        )
        return
    verb = "would delete" if report.dry_run else "deleted"
    console.print(
        f"{verb} {len(report.deleted)} backup(s) and {report.wal_deleted} WAL file(s) ({human(report.wal_bytes)})",
        highlight=False,
    )
    for backup_id in report.deleted:
        console.print(f"  {backup_id}", highlight=False)
    for region, ids in report.region_deleted.items():
        if ids:
            console.print(
                f"{verb} {len(ids)} backup(s) in region {region} only (its own policy)", highlight=False
            )
        for backup_id in ids:
            console.print(f"  {backup_id}", highlight=False)
    for skipped in report.skipped:
        where = f" (region {skipped['region']})" if "region" in skipped else ""
        err_console.print(f"  left alone: {skipped['backup']}{where}: {skipped['why']}", highlight=False)
    if garbage is not None:
        _print_gc(garbage)
    if report.dry_run and report.deleted:
        console.print("a dry run: add --confirm to delete")


@hold_app.command("add")
@handles_errors
def hold_add(
    backup_id: Annotated[str | None, typer.Argument(help="The backup to hold.")] = None,
    source: Annotated[
        str | None, typer.Option("--source", "-s", help="Hold every backup of this source.")
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (matter, counsel, ticket).")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Place a legal hold on a backup or a whole source: nothing it covers is deleted until released."""
    with _system() as system:
        hold = system.add_hold(reason, backup_id=backup_id, source=source)
    if as_json:
        print_json(hold)
    else:
        console.print(
            f"hold {hold['id']} on {hold['backup'] or 'source ' + str(hold['source'])}: {hold['reason']}"
        )


@hold_app.command("release")
@handles_errors
def hold_release(
    hold_id: int,
    reason: Annotated[str, typer.Option("--reason", help="Why it is released.")] = "",
) -> None:
    """Release a hold (audited); what it covered falls back under the retention rules."""
    with _system() as system:
        hold = system.release_hold(hold_id, reason)
    console.print(f"hold {hold['id']} released by {hold['released_by']}")


@hold_app.command("list")
@handles_errors
def hold_list(
    released: Annotated[bool, typer.Option("--all", help="Released holds too.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The holds in force (with --all, released ones too)."""
    with _system() as system:
        rows = system.list_holds(include_released=released)
    if as_json:
        print_json(rows)
        return
    for h in rows:
        state = f"released {h['released_at'][:19]} by {h['released_by']}" if h["released_at"] else "in force"
        console.print(
            f"{h['id']:>4}  {h['backup'] or 'source ' + str(h['source']):<28} {state:<20} {h['reason']} "
            f"(by {h['created_by']}, {h['created_at'][:19]})",
            highlight=False,
        )


@gc_app.command("run")
@handles_errors
def gc_run(
    confirm: Annotated[
        bool, typer.Option("--confirm", help="Mark and delete for real (without: a dry run).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete packs that no manifest in storage needs, safely beside running backups: a pack is first
    marked (its chunks leave the index), then deleted by a later run once the grace period has passed and
    every backup running at marking has finished (docs/GC.md). A mostly-empty pack (BACKUP_GC_REPACK_BELOW)
    has its live chunks copied into a new pack, then goes the same way. A dry run without --confirm."""
    from app.gc.run import collect_garbage

    with _system() as system:
        report = collect_garbage(system.context, confirm=confirm, actor=system.actor)
    if as_json:
        print_json(report.to_json())
    else:
        _print_gc(report)


def _print_gc(report: GcReport) -> None:
    verb = "would" if report.dry_run else "did"
    console.print(
        f"{report.manifests} manifest(s) read; {verb} delete {len(report.deleted)} pack(s) "
        f"({human(report.deleted_bytes)}), mark {len(report.marked)} ({human(report.marked_bytes)}); "
        f"{len(report.returned)} returned to the index, {report.waiting} waiting",
        highlight=False,
    )
    repacked = report.repack
    if repacked is not None and repacked.packs:
        into = f" into {len(repacked.written)} ({human(repacked.written_bytes)})" if repacked.written else ""
        console.print(
            f"{verb} repack {len(repacked.packs)} mostly-empty pack(s) ({human(repacked.bytes)}, "
            f"{human(repacked.live_bytes)} live){into}",
            highlight=False,
        )
    for problem in report.problems:
        err_console.print(f"  problem: {problem}", highlight=False)
