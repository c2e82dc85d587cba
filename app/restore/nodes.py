"""Restoring what has no content of its own: hard links to restored files, FIFOs and device nodes; and
choosing which name of a hard-linked file carries the content when only some paths are restored."""

from __future__ import annotations

import os
import stat
from typing import Any

from app.errors import IntegrityError
from app.restore import metadata
from app.restore.target import safe_relpath
from app.restore.tree import TargetTree, fail, split
from app.sources.files import DEVICE_TYPES

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


def make_link(tree: TargetTree, entry: dict[str, Any]) -> None:
    """Link `entry` (a hard link) to its target, a file this restore wrote; a name in the way (with
    --overwrite) is replaced. Both directories are reached by descriptor (app/restore/tree.py); the
    link is made to the target itself, never through a symlink."""
    rel = safe_relpath(entry["path"])
    (parent, name), (target_parent, target_name) = split(rel), split(safe_relpath(str(entry["target"])))
    with tree.dir(target_parent) as target_dir_fd, tree.dir(parent, create=True) as dir_fd:
        try:
            _clear(tree, dir_fd, name, rel)
            create_link(target_dir_fd, target_name, dir_fd, name)
        except OSError as exc:
            fail(tree.root, rel, exc)


def make_special(tree: TargetTree, entry: dict[str, Any], warnings: list[dict[str, str]]) -> bool:
    """Create a FIFO or device node with its metadata; False (with a warning) for a device node when
    not root, or when the system refuses it (a container without the capability)."""
    refused = special_refused(entry)
    if refused is not None:
        warnings.append({"path": entry["path"], "warning": refused})
        return False
    rel = safe_relpath(entry["path"])
    parent, name = split(rel)
    with tree.dir(parent, create=True) as dir_fd:
        try:
            _clear(tree, dir_fd, name, rel)
            try:
                create_special(dir_fd, name, entry)
            except PermissionError as exc:
                warnings.append(
                    {"path": entry["path"], "warning": f"{entry['type']} not restored: {exc.strerror}"}
                )
                return False
            metadata.apply_to_node(dir_fd, name, entry)
        except OSError as exc:
            fail(tree.root, rel, exc)
    return True


def special_refused(entry: dict[str, Any]) -> str | None:
    """Why this special file will not be created (a device node needs root), or None."""
    if entry["type"] in DEVICE_TYPES and not _IS_ROOT:
        return "device node not restored: creating one needs root"
    return None


def create_special(dir_fd: int, name: str, entry: dict[str, Any]) -> None:
    """Create the FIFO or device node `entry` as `name` in the directory `dir_fd` (mode 0600: its own
    mode comes with its metadata, as for every entry). PermissionError when the system refuses it."""
    kind = entry["type"]
    if kind == "fifo":
        os.mkfifo(name, 0o600, dir_fd=dir_fd)
        return
    if kind not in DEVICE_TYPES:
        raise IntegrityError(f"manifest entry {entry['path']!r} of type {kind!r} is not a special file")
    major, minor = entry["rdev"]
    os.mknod(name, _KINDS[kind] | 0o600, os.makedev(int(major), int(minor)), dir_fd=dir_fd)


def create_link(target_dir_fd: int, target_name: str, dir_fd: int, name: str) -> None:
    """Link `name` in `dir_fd` to `target_name` in `target_dir_fd`; a symlink there is linked as itself,
    never followed."""
    os.link(target_name, name, src_dir_fd=target_dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)


def _clear(tree: TargetTree, dir_fd: int, name: str, rel: str) -> None:
    """Remove what is in the way (a restore with --overwrite; the target scan refused it otherwise): a
    non-directory is unlinked, a directory removed whole; nothing is followed."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        tree.remove_dir_at(dir_fd, name, rel)
    else:
        os.unlink(name, dir_fd=dir_fd)
