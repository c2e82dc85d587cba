"""Checks on the restore target and on manifest paths, before anything is written."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from app.errors import IntegrityError, RestoreTargetError
from app.restore.tree import _TOKEN_HEX, PARTIAL_SUFFIX, TargetTree, kind_of, split

__all__ = [
    "PARTIAL_SUFFIX",
    "UNFINISHED_MARKER",
    "check_target",
    "make_target",
    "mark_finished",
    "mark_unfinished",
    "normalise_selection",
    "remove_partials",
    "restore_identity",
    "resumes",
    "safe_relpath",
    "scan",
]

#: What a manifest entry's type is on disk (a hard link is a file); anything else is "other".
_KIND = {"file": "file", "hardlink": "file", "dir": "dir", "symlink": "symlink"}
#: Conflicts named in a refusal; the rest are counted.
_SHOWN = 5
#: In a target while a restore writes into it, removed once it has finished: the same restore run
#: again (a Celery retry, a redelivery after a lost worker, the same command) resumes into it.
UNFINISHED_MARKER = ".eqdr-restore-unfinished"


def restore_identity(backup_id: str, paths: list[str] | None) -> dict[str, Any]:
    """What makes two restores into one target the same restore: the backup and the selection."""
    return {"backup_id": backup_id, "paths": paths}


def unfinished_restore(target: Path) -> dict[str, Any] | None:
    """The identity of the restore that started in `target` and never finished, if any."""
    try:
        fd = os.open(target / UNFINISHED_MARKER, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as f:
            found = json.loads(f.read(1 << 16))
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def resumes(target: Path, identity: dict[str, Any], *, allow_existing: bool) -> bool:
    """Whether `target` holds this very restore (`identity`), left unfinished: it then resumes over
    what is there. The unfinished restore of another backup or selection is refused, naming it,
    unless `allow_existing`. Nothing is written."""
    unfinished = unfinished_restore(target)
    if unfinished is None:
        return False
    if unfinished == identity:
        return True
    if not allow_existing:
        raise RestoreTargetError(
            f"restore target {target} holds an unfinished restore of backup "
            f"{unfinished.get('backup_id')} (paths {unfinished.get('paths') or 'all'})",
            hint="run that restore again to finish it, restore elsewhere, or empty the directory",
        )
    return False


#: A partial file's name as app/restore/tree.py: partial_name makes it.
_PARTIAL_NAME = re.compile(rf"\..*\.[0-9a-f]{{{_TOKEN_HEX}}}{re.escape(PARTIAL_SUFFIX)}", re.DOTALL)


def remove_partials(target: Path) -> int:
    """Remove the partial files an unfinished restore left in `target` (a lost worker could not), by
    their names' pattern, descending into no link; how many were removed."""
    removed = 0
    for _dir, _dirs, names, fd in os.fwalk(target, follow_symlinks=False):
        for name in names:
            if _PARTIAL_NAME.fullmatch(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=fd)
                    removed += 1
    return removed


def mark_unfinished(target: Path, identity: dict[str, Any]) -> None:
    """Create `target` if missing and mark a restore in it as started, durably, before any entry."""
    make_target(target)
    fd = os.open(target / UNFINISHED_MARKER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(json.dumps(identity, sort_keys=True).encode())
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(target)


def mark_finished(target: Path) -> None:
    """The restore in `target` has written every entry: remove its mark."""
    try:
        os.unlink(target / UNFINISHED_MARKER)
    except FileNotFoundError:
        return
    _fsync_dir(target)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_target(target: Path, *, allow_existing: bool) -> bool:
    """Refuse a target that is not a directory, lies inside a file, or is a non-empty directory unless
    `allow_existing`. True when the target holds something already. Nothing is written."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        _check_parents(target)
        return False
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            _check_parents(target)
        raise _unusable(target, exc) from None
    if not _is_dir(st.st_mode):
        raise RestoreTargetError(
            f"restore target {target} exists and is not a directory",
            hint="give a directory (it is created if missing)",
        )
    try:
        with os.scandir(target) as listing:
            occupied = any(True for _ in listing)
    except OSError as exc:
        raise _unusable(target, exc) from None
    if occupied and not allow_existing:
        raise RestoreTargetError(
            f"restore target {target} is not empty",
            hint="restore into an empty or new directory, pass --overwrite to replace what the backup "
            "holds, or --skip-existing to restore only what is missing",
        )
    return occupied


def _is_dir(mode: int) -> bool:
    return kind_of(mode) == "dir"


def _check_parents(target: Path) -> None:
    """The nearest existing parent of a missing target must be a directory."""
    for parent in target.parents:
        try:
            st = os.stat(parent)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                continue  # a parent further up is the file
            raise _unusable(target, exc) from None
        if not _is_dir(st.st_mode):
            raise RestoreTargetError(
                f"restore target {target} lies inside {parent}, which is not a directory",
                hint="give a directory whose parents are directories (it is created if missing)",
            )
        return


def _unusable(target: Path, exc: OSError) -> RestoreTargetError:
    return RestoreTargetError(
        f"restore target {target} cannot be used: {exc.strerror or exc}",
        hint="give a directory this user can write (it is created if missing)",
    )


def make_target(target: Path) -> None:
    """Create the target directory and its parents, or say why not."""
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.EEXIST):
            _check_parents(target)
        raise _unusable(target, exc) from None


def scan(target: Path, entries: list[dict[str, Any]], *, replace: bool) -> dict[str, str]:
    """What the target already holds at the entries' paths ({path: kind}), looked up without following
    a link; unless `replace`, refuse (before anything is written) if any is of another kind than the
    backup's entry (a file or a link where the backup has a directory, or the reverse)."""
    existing: dict[str, str] = {}
    conflicts: list[str] = []
    by_parent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        by_parent[split(safe_relpath(e["path"]))[0]].append(e)
    with TargetTree(str(target)) as tree:
        for parent, items in by_parent.items():
            fd = tree.find(parent)
            if fd is None:  # missing, or not a directory: the parent's own entry says which
                continue
            try:
                for e in items:
                    try:
                        st = os.stat(split(e["path"])[1], dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        raise _unusable(target / e["path"], exc) from None
                    have, want = kind_of(st.st_mode), _KIND.get(e["type"], "other")
                    existing[e["path"]] = have
                    if have != want:
                        conflicts.append(f"{e['path']} (a {have} in the target, a {want} in the backup)")
            finally:
                os.close(fd)
    if conflicts and not replace:
        more = f" and {len(conflicts) - _SHOWN} more" if len(conflicts) > _SHOWN else ""
        raise RestoreTargetError(
            f"restore target {target} holds entries of another kind than the backup's: "
            f"{'; '.join(conflicts[:_SHOWN])}{more}",
            detail="nothing was written",
            hint="pass --overwrite to replace them (links in the target are replaced, never followed), "
            "or move them away",
        )
    return existing


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
