"""The trail operations the CLI, the tasks and the catalog rebuild call, over one context."""

from __future__ import annotations

from app.audit.anchors import AnchorHead, newest_anchor, write_anchors
from app.audit.trail import TrailCheck, check_trail
from app.catalog.db import transaction
from app.context import Context
from app.errors import EquisplitError


def verify_trail(ctx: Context, *, need_anchor: bool = True) -> TrailCheck:
    """Check the whole trail against the newest anchor (none yet: the chain alone, said in its notes).
    With `need_anchor` False, an anchor that cannot be read (no key here) leaves the chain check alone."""
    try:
        anchor = newest_anchor(ctx.repository)
    except EquisplitError as exc:
        if need_anchor:
            raise
        with ctx.sessions() as session:
            check = check_trail(session, None)
        check.notes = [f"the anchors could not be read ({exc.message}): chain checked without them"]
        return check
    with ctx.sessions() as session:
        return check_trail(session, anchor)


def anchor_trail(ctx: Context) -> list[AnchorHead]:
    """Seal what was appended since the newest anchor; [] when nothing was."""
    with transaction(ctx.sessions) as session:
        return write_anchors(session, ctx.repository)
