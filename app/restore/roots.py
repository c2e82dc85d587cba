"""Where a restore task from the broker may write: only below the restore roots (BACKUP_RESTORE_ROOTS),
judged on the path with its links resolved, so no link takes a restore out (docs/CLUSTER.md)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from app.errors import RestoreTargetError

HINT = "restore below one of BACKUP_RESTORE_ROOTS, or add a directory to BACKUP_RESTORE_ROOTS on the workers"


def confine(target: str | Path, roots: Sequence[Path]) -> Path:
    """`target` as the restore will use it: an absolute path without `..`, whose existing part, links
    resolved, lies in one of `roots` (or is one); RestoreTargetError otherwise, before anything is
    written. The part that does not exist yet is created by the restore itself."""
    raw = str(target)
    if not os.path.isabs(raw):
        raise RestoreTargetError(f"restore target {raw!r} is not an absolute path", hint=HINT)
    if ".." in Path(raw).parts:
        raise RestoreTargetError(f"restore target {raw!r} contains '..'", hint=HINT)
    path = Path(os.path.normpath(raw))
    existing, missing = path, []
    while not os.path.lexists(existing):  # a dangling link exists: realpath below follows it
        missing.append(existing.name)
        existing = existing.parent
    resolved = Path(os.path.realpath(existing)).joinpath(*reversed(missing))
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if resolved == real_root or real_root in resolved.parents:
            return resolved
    raise RestoreTargetError(
        f"restore target {raw} is outside the restore roots ({', '.join(str(r) for r in roots)})",
        detail=None if resolved == path else f"with its links resolved it is {resolved}",
        hint=HINT,
    )
