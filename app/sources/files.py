"""Walking a file tree into manifest entries, without following symlinks or crossing into the unknown:
files, directories, symlinks, hard links (one file, the other names linking to it) and special files."""

from __future__ import annotations

import base64
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import SourceError
from app.sources.watch import SizeWatch

#: Entry types, as docs/FORMAT.md section 6 lists them.
ENTRY_TYPES = ("dir", "file", "symlink", "hardlink", "fifo", "chardev", "blockdev")
#: Types restored with mknod: FIFOs and device nodes (these carry `rdev`).
SPECIAL_TYPES = ("fifo", "chardev", "blockdev")
DEVICE_TYPES = ("chardev", "blockdev")
#: The entry of the source root itself (its mode, owner, mtime).
ROOT_PATH = "."
SOCKET_SKIPPED = "socket not backed up (a socket belongs to the process that listens on it)"


@dataclass
class Entry:
    """One file, directory, symlink, hard link or special file, as the manifest records it
    (docs/FORMAT.md section 6). `target`: a symlink's text, or the path a hard link links to."""

    path: str
    type: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0
    ctime_ns: int = 0
    inode: int = 0
    target: str | None = None
    rdev: list[int] | None = None  # [major, minor] of a device node
    sparse: bool = False  # a file with fewer blocks allocated than its size needs
    xattrs: dict[str, str] = field(default_factory=dict)
    chunks: list[str] = field(default_factory=list)
    #: The file system device the walk found it on: not in the manifest; a unit compares it, with the
    #: inode, against the file it opens (app/sources/confined.py).
    device: int = 0

    def to_json(self) -> dict[str, Any]:
        # one literal per shape (a backup converts every entry, 40,000 of them for the 1 GB bench tree,
        # several times); the keys keep their order: a manifest's bytes, so its chunks' ids, depend on it
        doc: dict[str, Any]
        if self.type == "file":
            doc = {
                "path": self.path,
                "type": "file",
                "mode": self.mode,
                "uid": self.uid,
                "gid": self.gid,
                "mtime_ns": self.mtime_ns,
                "size": self.size,
                "ctime_ns": self.ctime_ns,
                "inode": self.inode,
                "chunks": self.chunks,
            }
            if self.sparse:  # only when true: other entries keep the bytes they always had
                doc["sparse"] = True
        else:
            doc = {
                "path": self.path,
                "type": self.type,
                "mode": self.mode,
                "uid": self.uid,
                "gid": self.gid,
                "mtime_ns": self.mtime_ns,
            }
        if self.target is not None:
            doc["target"] = self.target
        if self.rdev is not None:
            doc["rdev"] = self.rdev
        if self.xattrs:
            doc["xattrs"] = self.xattrs
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Entry:
        return cls(
            path=doc["path"],
            type=doc["type"],
            mode=doc["mode"],
            uid=doc.get("uid", 0),
            gid=doc.get("gid", 0),
            mtime_ns=doc["mtime_ns"],
            size=doc.get("size", 0),
            ctime_ns=doc.get("ctime_ns", 0),
            inode=doc.get("inode", 0),
            target=doc.get("target"),
            rdev=doc.get("rdev"),
            sparse=bool(doc.get("sparse", False)),
            xattrs=doc.get("xattrs", {}),
            chunks=list(doc.get("chunks", [])),
        )


@dataclass
class Walk:
    entries: list[Entry]
    errors: list[dict[str, str]]
    skipped: list[dict[str, str]]


def _xattrs(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    found = {}
    for name in names:
        try:
            found[name] = base64.b64encode(os.getxattr(path, name, follow_symlinks=False)).decode("ascii")
        except OSError:
            continue
    return found


def entry_from_stat(rel: str, full: str, st: os.stat_result) -> Entry | None:
    """The manifest entry of one path, or None for a socket (or a type Linux does not have)."""
    rdev: list[int] | None = None
    if stat.S_ISREG(st.st_mode):
        kind, target, xattrs = "file", None, _xattrs(full)
    elif stat.S_ISDIR(st.st_mode):
        kind, target, xattrs = "dir", None, _xattrs(full)
    elif stat.S_ISLNK(st.st_mode):
        kind, target, xattrs = "symlink", os.readlink(full), {}
    elif stat.S_ISFIFO(st.st_mode):
        kind, target, xattrs = "fifo", None, {}
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        kind, target, xattrs = ("chardev" if stat.S_ISCHR(st.st_mode) else "blockdev"), None, {}
        rdev = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    else:
        return None
    is_file = kind == "file"
    return Entry(
        path=rel,
        type=kind,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        size=st.st_size if is_file else 0,
        ctime_ns=st.st_ctime_ns if is_file else 0,
        inode=st.st_ino if is_file else 0,
        target=target,
        rdev=rdev,
        sparse=is_file and st.st_blocks * 512 < st.st_size,
        xattrs=xattrs,
        device=st.st_dev if is_file else 0,
    )


class HardLinks:
    """Groups the walk's regular files by (device, inode): the first name met of a file with more than
    one link keeps the content, each later one becomes a `hardlink` entry naming it."""

    def __init__(self) -> None:
        self.first: dict[tuple[int, int], str] = {}

    def link(self, entry: Entry, st: os.stat_result) -> Entry:
        """`entry` itself, or (for another name of a file already met) the hard link that replaces it."""
        if entry.type != "file" or st.st_nlink < 2:
            return entry
        key = (st.st_dev, st.st_ino)
        target = self.first.setdefault(key, entry.path)
        if target == entry.path:
            return entry
        return Entry(entry.path, "hardlink", entry.mode, entry.uid, entry.gid, entry.mtime_ns, target=target)


def walk_tree(root: Path, watch: SizeWatch | None = None) -> Walk:
    """Every entry under `root` in a stable order; unreadable paths are collected, not fatal. `watch`
    is told the size of each file found. Directories are opened one level at a time from the root's
    descriptor without following a link, so a directory swapped for a symlink during the walk is an
    error naming it, never a walk outside the source."""
    if not root.exists():
        raise SourceError(f"source path {root} does not exist", hint="fix the source's path or re-create it")
    if not root.is_dir():
        raise SourceError(f"source path {root} is not a directory")
    if not os.access(root, os.R_OK | os.X_OK):
        raise SourceError(
            f"source path {root} is not readable", hint="run the backup as a user that can read it"
        )
    walk = Walk([], [], [])
    try:
        root_entry = entry_from_stat(ROOT_PATH, str(root), os.stat(root))
        root_fd = os.open(root, _OPEN_DIR)
    except OSError as exc:
        raise SourceError(f"source path {root} cannot be read: {exc.strerror}") from exc
    assert root_entry is not None and root_entry.type == "dir"
    walk.entries.append(root_entry)
    links = HardLinks()
    try:
        for rel, full, st in _scan(root_fd, str(root), "", walk):
            entry = entry_from_stat(rel, full, st)
            if entry is None:
                walk.skipped.append({"path": rel, "reason": SOCKET_SKIPPED})
            else:
                entry = links.link(entry, st)
                walk.entries.append(entry)
                if watch is not None:
                    watch.add(entry)
    finally:
        os.close(root_fd)
    return walk


_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: A directory's entries, named through its open descriptor: readlink and xattrs of `/proc/self/fd/N/name`
#: cannot follow a directory swapped for a symlink meanwhile.
_FD_PATHS = os.path.isdir("/proc/self/fd")


def _scan(dir_fd: int, root: str, rel_dir: str, walk: Walk) -> Iterator[tuple[str, str, os.stat_result]]:
    try:
        with os.scandir(dir_fd) as it:
            items = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        walk.errors.append({"path": rel_dir or ".", "error": exc.strerror or exc.__class__.__name__})
        return
    for item in items:
        rel = f"{rel_dir}/{item.name}" if rel_dir else item.name
        try:
            st = item.stat(follow_symlinks=False)
        except OSError as exc:
            walk.errors.append({"path": rel, "error": exc.strerror or exc.__class__.__name__})
            continue
        full = f"/proc/self/fd/{dir_fd}/{item.name}" if _FD_PATHS else os.path.join(root, rel)
        yield rel, full, st
        if stat.S_ISDIR(st.st_mode):
            child = _open_subdir(dir_fd, item.name, rel, st, walk)
            if child is not None:
                try:
                    yield from _scan(child, root, rel, walk)
                finally:
                    os.close(child)


def _open_subdir(dir_fd: int, name: str, rel: str, seen: os.stat_result, walk: Walk) -> int | None:
    """The directory the walk just listed, opened without following a link; None (and an error naming
    it) if it is unreadable, gone, or another directory or a link now."""
    try:
        fd = os.open(name, _OPEN_DIR | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            walk.errors.append(
                {"path": rel, "error": "replaced during the walk (not a directory now); not followed"}
            )
        else:
            walk.errors.append({"path": rel, "error": exc.strerror or exc.__class__.__name__})
        return None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (seen.st_dev, seen.st_ino):
        os.close(fd)
        walk.errors.append(
            {"path": rel, "error": "replaced by another directory during the walk; not followed"}
        )
        return None
    return fd
