"""`equisplit-dr audit verify|anchor` and `equisplit-dr approval request|grant|list` (docs/AUDIT.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.commands import handles_errors
from app.cli.commands import open_system as _system
from app.cli.render import JsonOpt, console, err_console, fail, print_json
from app.errors import AuditTrailError

audit_app = typer.Typer(no_args_is_help=True, help="The audit trail: verify its hash chain, anchor its head.")
approval_app = typer.Typer(no_args_is_help=True, help="Second-person approvals of restores and deletions.")




@audit_app.command("verify")
@handles_errors
def audit_verify(
    as_json: JsonOpt = False,
    from_region: Annotated[
        str | None,
        typer.Option("--from-region", help="Compare with the anchors in this secondary region, not the primary."),
    ] = None,
) -> None:
    """Check every entry's hash and link, and the head against the newest anchor in storage. Names the
    first bad entry (edited, removed, reordered, truncated, rewritten); exit 18 unless the trail verifies."""
    with _system(from_region, audited=False) as system:
        check = system.verify_audit_trail()
    if as_json:
        print_json(check.to_json())
    else:
        anchor = f", anchored up to entry {check.anchor.last_id} ({check.anchor.at})" if check.anchor else ""
        if check.ok:
            console.print(
                f"audit trail verified: {check.entries} entries, head {check.head_id}{anchor}",
                highlight=False,
            )
        for note in check.notes:
            err_console.print(f"[yellow]note:[/] {note}", highlight=False)
    if check.problem is not None:
        fail(
            AuditTrailError(
                check.problem.message, hint="restore the catalog, or `catalog rebuild` for a truncated trail"
            )
        )


@audit_app.command("anchor")
@handles_errors
def audit_anchor(as_json: JsonOpt = False) -> None:
    """Seal the trail's head in storage now (beat does it every AUDIT_ANCHOR_INTERVAL seconds)."""
    with _system() as system:
        heads = system.anchor_audit_trail()
    if as_json:
        print_json([h.to_json() for h in heads])
    elif heads:
        console.print(f"anchored entries up to {heads[-1].last_id} in {heads[-1].name}", highlight=False)
    else:
        console.print("nothing appended since the newest anchor")


@approval_app.command("request")
@handles_errors
def approval_request(
    action: Annotated[str, typer.Option("--action", help="restore or delete.")],
    obj: Annotated[str, typer.Option("--object", help="The backup id or source name (`*`: any).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (ticket, incident).")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Ask for a second person's approval of a restore or a deletion."""
    with _system() as system:
        row = system.request_approval(action, obj, reason)
    if as_json:
        print_json(row)
    else:
        console.print(
            f"approval {row['id']} requested by {row['requested_by']}: {action} of {obj}", highlight=False
        )


@approval_app.command("grant")
@handles_errors
def approval_grant(approval_id: int, as_json: JsonOpt = False) -> None:
    """Grant another operator's request (never one's own)."""
    with _system() as system:
        row = system.grant_approval(approval_id)
    if as_json:
        print_json(row)
    else:
        console.print(f"approval {row['id']} granted by {row['granted_by']}", highlight=False)


@approval_app.command("list")
@handles_errors
def approval_list(as_json: JsonOpt = False) -> None:
    """Every approval: requested, granted, used."""
    with _system() as system:
        rows = system.list_approvals()
    if as_json:
        print_json(rows)
        return
    for r in rows:
        state = "used" if r["used_at"] else "granted" if r["granted_at"] else "pending"
        console.print(
            f"{r['id']:>4}  {r['action']:<8} {r['object']:<28} {state:<8} by {r['requested_by']}"
            f"{' / ' + r['granted_by'] if r['granted_by'] else ''}  {r['reason']}",
            highlight=False,
        )
