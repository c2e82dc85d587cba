"""Checks on the restore target and on manifest paths, before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

from app.errors import IntegrityError, RestoreTargetError

PARTIAL_SUFFIX = ".eqdr-partial"


def check_target(target: Path, *, overwrite: bool) -> None:
    """Refuse a target that is a file, or a non-empty directory unless `overwrite`."""
    if target.exists() and not target.is_dir():
        raise RestoreTargetError(
            f"restore target {target} exists and is not a directory",
            hint="give a directory (it is created if missing)",
        )
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise RestoreTargetError(
            f"restore target {target} is not empty",
            hint="restore into an empty or new directory, or pass --overwrite to replace files in it",
        )


def safe_relpath(rel: str) -> str:
    """A manifest path, checked: IntegrityError if it would escape the restore target."""
    if not rel or rel.startswith("/") or "\x00" in rel or ".." in rel.split("/"):
        raise IntegrityError(f"manifest entry {rel!r} would escape the restore target; refusing it")
    return rel


def safe_path(target: Path, rel: str) -> Path:
    """The target path of a manifest entry; IntegrityError if it would escape the target."""
    return target / safe_relpath(rel)


def selected(path: str, wanted: list[str]) -> bool:
    """Whether `path` is one of `wanted` or below one."""
    return any(path == w or path.startswith(w + "/") for w in wanted)


def normalise_selection(paths: list[str] | None) -> list[str] | None:
    if not paths:
        return None
    result = []
    for p in paths:
        clean = os.path.normpath(p.strip("/")).replace(os.sep, "/")
        if clean in ("", "."):
            return None
        if clean.startswith(".."):
            raise RestoreTargetError(f"--path {p!r} points outside the backup")
        result.append(clean)
    return result
