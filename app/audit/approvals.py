"""Second-person approval of restores and deletions (docs/AUDIT.md section 5). With
`DR_APPROVAL_REQUIRED=restore,delete`, a restore or `retention apply --confirm` needs the id of an
approval that one actor requested and another granted; it is used once, and each step is audited."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import clock
from app.catalog import audit
from app.catalog.models import Approval
from app.errors import ApprovalError

ACTIONS = ("restore", "delete")


def approval_json(a: Approval) -> dict[str, Any]:
    return {
        "id": a.id,
        "action": a.action,
        "object": a.object,
        "reason": a.reason,
        "requested_by": a.requested_by,
        "requested_at": clock.iso(a.requested_at),
        "granted_by": a.granted_by,
        "granted_at": clock.iso(a.granted_at),
        "used_by": a.used_by,
        "used_at": clock.iso(a.used_at),
    }


def request_approval(session: Session, action: str, obj: str, reason: str, actor: str) -> Approval:
    if action not in ACTIONS:
        raise ApprovalError(f"no approval for {action!r}", hint=f"the action is one of {', '.join(ACTIONS)}")
    if not reason.strip():
        raise ApprovalError("an approval request needs a reason", hint="pass --reason (ticket, incident)")
    approval = Approval(
        action=action, object=obj, reason=reason, requested_by=actor, requested_at=clock.now()
    )
    session.add(approval)
    session.flush()
    audit.append(
        session,
        "approval.requested",
        f"approval {approval.id}",
        {"action": action, "object": obj, "reason": reason},
        actor,
    )
    return approval


def _get(session: Session, approval_id: int) -> Approval:
    approval = session.get(Approval, approval_id)
    if approval is None:
        raise ApprovalError(f"no approval {approval_id}", hint="`equisplit-dr approval list` shows them")
    return approval


def grant_approval(session: Session, approval_id: int, actor: str) -> Approval:
    """Grant by a second person: the requester cannot grant their own request."""
    approval = _get(session, approval_id)
    if approval.granted_by is not None:
        raise ApprovalError(f"approval {approval_id} was already granted by {approval.granted_by}")
    if actor == approval.requested_by:
        raise ApprovalError(
            f"approval {approval_id} was requested by {actor}: a second person must grant it",
            hint="ask another operator to run `equisplit-dr approval grant` (the actor is DR_ACTOR or user@host)",
        )
    approval.granted_by, approval.granted_at = actor, clock.now()
    audit.append(
        session,
        "approval.granted",
        f"approval {approval.id}",
        {"action": approval.action, "object": approval.object},
        actor,
    )
    return approval


def list_approvals(session: Session) -> list[dict[str, Any]]:
    return [approval_json(a) for a in session.scalars(select(Approval).order_by(Approval.id))]


def use_approval(
    session: Session,
    required: list[str],
    action: str,
    objects: list[str],
    approval_id: int | None,
    actor: str,
) -> int | None:
    """When `action` needs approval: check that `approval_id` names a granted, unused approval of this
    action on one of `objects` (or `*`) granted by someone other than `actor`, and mark it used.
    Returns the approval id used, or None when no approval is required."""
    if action not in required:
        return None
    if approval_id is None:
        raise ApprovalError(
            f"a {action} needs a second person's approval (DR_APPROVAL_REQUIRED)",
            hint=f"`equisplit-dr approval request --action {action} --object {objects[0]} --reason ...`, have "
            "another operator grant it, then pass --approval ID",
        )
    approval = _get(session, approval_id)
    if approval.action != action or (approval.object != "*" and approval.object not in objects):
        raise ApprovalError(
            f"approval {approval_id} is for {approval.action} of {approval.object}, not {action} of {objects[0]}"
        )
    if approval.granted_by is None:
        raise ApprovalError(
            f"approval {approval_id} is not granted yet", hint="another operator runs `approval grant`"
        )
    if approval.granted_by == actor:
        raise ApprovalError(f"approval {approval_id} was granted by {actor}, who cannot also carry it out")
    if approval.used_at is not None:
        raise ApprovalError(
            f"approval {approval_id} was already used by {approval.used_by} at {clock.iso(approval.used_at)}"
        )
    approval.used_by, approval.used_at = actor, clock.now()
    audit.append(
        session,
        "approval.used",
        f"approval {approval.id}",
        {"action": action, "object": objects[0], "granted_by": approval.granted_by},
        actor,
    )
    return approval.id
