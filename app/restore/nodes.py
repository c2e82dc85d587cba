"""Restoring what has no content of its own: hard links to restored files, FIFOs and device nodes; and
choosing which name of a hard-linked file carries the content when only some paths are restored."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from typing import Any

from app.errors import IntegrityError
from app.restore.target import safe_relpath
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


def make_link(root: str, entry: dict[str, Any]) -> None:
    """Link `entry` (a hard link) to its target, a file this restore wrote; a name in the way (with
    --overwrite) is replaced. The link is made to the target itself, never through a symlink."""
    with (
        _parent(root, entry["path"]) as (dir_fd, name),
        _parent(root, str(entry["target"])) as (target_dir_fd, target_name),
    ):
        _clear(dir_fd, name)
        create_link(target_dir_fd, target_name, dir_fd, name)


def make_special(root: str, entry: dict[str, Any], warnings: list[dict[str, str]]) -> bool:
    """Create a FIFO or device node; False (with a warning) for a device node when not root, or
    when the system refuses it (a container without the capability)."""
    refused = special_refused(entry)
    if refused is not None:
        warnings.append({"path": entry["path"], "warning": refused})
        return False
    with _parent(root, entry["path"]) as (dir_fd, name):
        _clear(dir_fd, name)
        try:
            create_special(dir_fd, name, entry)
        except PermissionError as exc:
            warnings.append(
                {"path": entry["path"], "warning": f"{entry['type']} not restored: {exc.strerror}"}
            )
            return False
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


@contextlib.contextmanager
def _parent(root: str, rel: str) -> Iterator[tuple[int, str]]:
    """(a descriptor of the directory holding `rel`, its last name); the directory itself is opened
    without following a symlink in its place."""
    parent, _, name = safe_relpath(rel).rpartition("/")
    fd = os.open(os.path.join(root, parent), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        yield fd, name
    finally:
        os.close(fd)


def _clear(dir_fd: int, name: str) -> None:
    """Remove a non-directory in the way (a restore with --overwrite); a directory stays, and the
    creation after this fails on it, loudly."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISDIR(os.lstat(name, dir_fd=dir_fd).st_mode):
            os.unlink(name, dir_fd=dir_fd)
