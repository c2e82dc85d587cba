"""A file source's drill: its latest backup restored to a scratch directory, timed, and compared with
its manifest."""

from __future__ import annotations

import time
from pathlib import Path

from app import clock
from app.catalog.models import Backup
from app.context import Context
from app.drills.compare import compare_tree
from app.drills.result import DrillResult
from app.restore.engine import restore_backup


def drill_files(
    ctx: Context, backup: Backup, scratch: Path, result: DrillResult, *, actor: str | None
) -> None:
    """Restore `backup` into `scratch` (which must not exist) and fill in `result`."""
    began = time.monotonic()
    plan = restore_backup(ctx, backup.id, scratch, actor=actor)
    result.rto_seconds = time.monotonic() - began
    result.files, result.bytes = plan.files, plan.bytes
    result.point_reached = clock.as_utc(backup.started_at)
    result.rpo_seconds = (clock.now() - result.point_reached).total_seconds()
    result.checks.append(
        f"restored {plan.files} file(s), {plan.bytes} bytes from {plan.packs} pack(s) in {result.rto_seconds:.1f} s"
    )
    entries = ctx.repository.read_manifest(backup.id)["entries"]
    checked, differences = compare_tree(scratch, entries)
    result.checks.append(f"compared {checked} entries with the manifest: {len(differences)} difference(s)")
    result.problems.extend(differences)
