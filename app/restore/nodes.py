"""Restoring what has no content of its own: hard links to restored files, FIFOs and device nodes; and
choosing which name of a hard-linked file carries the content when only some paths are restored."""

from __future__ import annotations

import contextlib
import os
import stat
from typing import Any

from app.errors import IntegrityError
from app.restore.target import safe_relpath
from app.sources.files import DEVICE_TYPES, SPECIAL_TYPES

_IS_ROOT = os.geteuid() == 0
_KINDS = {"fifo": stat.S_IFIFO, "chardev": stat.S_IFCHR, "blockdev": stat.S_IFBLK}


def detach_links(chosen: list[dict[str, Any]], entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`chosen` (a subset of `entries`) with each hard link whose target is not chosen resolved: the
    first such link of a target becomes a file with the target's content, later ones link to it."""
    chosen_paths = {e["path"] for e in chosen}
    files = {e["path"]: e for e in entries if e["type"] == "file"}
    moved: dict[str, str] = {}  # target left out -> the link that carries its content instead
    result: list[dict[str, Any]] = []
    for entry in chosen:
        target = str(entry.get("target"))
        if entry["type"] != "hardlink" or target in chosen_paths:
            result.append(entry)
        elif target in moved:
            result.append({**entry, "target": moved[target]})
        elif target in files:
            moved[target] = entry["path"]
            result.append({**files[target], "path": entry["path"]})
        else:
            result.append(entry)  # refused with the others by check_links
    return result


def check_links(entries: list[dict[str, Any]]) -> None:
    """IntegrityError for a hard link whose target is not a file this restore writes."""
    files = {e["path"] for e in entries if e["type"] == "file"}
    for entry in entries:
        if entry["type"] == "hardlink" and entry.get("target") not in files:
            raise IntegrityError(
                f"manifest entry {entry['path']!r} is a hard link to {entry.get('target')!r}, which is not "
                "a file of the backup; refusing it",
                hint="the manifest is damaged: restore from another backup or a replica",
            )


def make_link(root: str, entry: dict[str, Any]) -> None:
    """Link `entry` (a hard link) to its target, a file this restore wrote; a name in the way (with
    --overwrite) is replaced. The link is made to the target itself, never through a symlink."""
    dest = os.path.join(root, safe_relpath(entry["path"]))
    source = os.path.join(root, safe_relpath(str(entry["target"])))
    _clear(dest)
    os.link(source, dest, follow_symlinks=False)


def make_special(root: str, entry: dict[str, Any], warnings: list[dict[str, str]]) -> bool:
    """Create a FIFO or device node; False (with a warning) for a device node when not root, or
    when the system refuses it (a container without the capability)."""
    dest = os.path.join(root, safe_relpath(entry["path"]))
    kind = entry["type"]
    assert kind in SPECIAL_TYPES
    if kind in DEVICE_TYPES and not _IS_ROOT:
        warnings.append(
            {"path": entry["path"], "warning": "device node not restored: creating one needs root"}
        )
        return False
    _clear(dest)
    mode = _KINDS[kind] | 0o600  # its own mode comes with the metadata, as for every entry
    try:
        if kind == "fifo":
            os.mkfifo(dest, 0o600)
        else:
            major, minor = entry["rdev"]
            os.mknod(dest, mode, os.makedev(int(major), int(minor)))
    except PermissionError as exc:
        warnings.append({"path": entry["path"], "warning": f"{kind} not restored: {exc.strerror}"})
        return False
    return True


def _clear(dest: str) -> None:
    """Remove a non-directory in the way (a restore with --overwrite); a directory stays, and the
    creation after this fails on it, loudly."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISDIR(os.lstat(dest).st_mode):
            os.unlink(dest)
