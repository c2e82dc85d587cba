"""A restored entry's metadata (owner, mode, xattrs, mtime), set on an open descriptor, or on a
symlink itself by its name in a directory descriptor: never through a path, never through a link."""

from __future__ import annotations

import base64
import contextlib
import os
from typing import Any

_IS_ROOT = os.geteuid() == 0


def apply_to_fd(fd: int, entry: dict[str, Any]) -> None:
    """Owner (as root), then mode (a chown clears set-user-id bits), xattrs and mtime of a file or a
    directory open as `fd`."""
    if _IS_ROOT:  # always: a set-group-id directory gives new files its group, not ours
        try:  # noqa: SIM105 (not contextlib.suppress: this runs once per restored file)
            os.chown(fd, entry.get("uid", 0), entry.get("gid", 0))
        except OSError:
            pass
    os.chmod(fd, entry["mode"])
    xattrs = entry.get("xattrs")
    if xattrs:
        for name, value in xattrs.items():
            with contextlib.suppress(OSError):
                os.setxattr(fd, name, base64.b64decode(value))
    mtime = entry["mtime_ns"]
    os.utime(fd, ns=(mtime, mtime))


def apply_to_link(dir_fd: int, name: str, entry: dict[str, Any]) -> None:
    """Owner (as root) and mtime of the symlink `name` in directory `dir_fd`, not of what it names."""
    if _IS_ROOT:
        with contextlib.suppress(OSError):
            os.chown(name, entry.get("uid", 0), entry.get("gid", 0), dir_fd=dir_fd, follow_symlinks=False)
    os.utime(name, ns=(entry["mtime_ns"], entry["mtime_ns"]), dir_fd=dir_fd, follow_symlinks=False)


def apply_to_node(dir_fd: int, name: str, entry: dict[str, Any]) -> None:
    """Owner (as root), mode and mtime of a FIFO or device node `name` just made in `dir_fd` (opening
    one could block or touch a device, so by name; the owner and mtime calls never follow a link)."""
    if _IS_ROOT:
        with contextlib.suppress(OSError):
            os.chown(name, entry.get("uid", 0), entry.get("gid", 0), dir_fd=dir_fd, follow_symlinks=False)
    os.chmod(name, entry["mode"], dir_fd=dir_fd)  # Linux has no lchmod; the name was made just now
    os.utime(name, ns=(entry["mtime_ns"], entry["mtime_ns"]), dir_fd=dir_fd, follow_symlinks=False)
