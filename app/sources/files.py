"""Walking a file tree into manifest entries, without following symlinks or crossing into the unknown:
files, directories, symlinks, hard links (one file, the other names linking to it) and special files."""

from __future__ import annotations

import base64
import errno
import os
import stat
from collections.abc import Callable, Iterator
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


@dataclass(slots=True)
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
    #: Not in the manifest: the parent manifest's entry of this file when the walk was told the change
    #: rule lets the backup take it over unread (its xattrs came from there, not from the file).
    parent_doc: dict[str, Any] | None = None

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


#: What a walk asks of the backup's parent about a regular file (its path and lstat): the parent
#: manifest's entry of that file if the change rule lets the backup reuse it unread (docs/BACKUP.md),
#: else None.
Reusable = Callable[[str, os.stat_result], "dict[str, Any] | None"]


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


def entry_from_stat(
    rel: str, full: str, st: os.stat_result, parent_doc: dict[str, Any] | None = None
) -> Entry | None:
    """The manifest entry of one path, or None for a socket (or a type Linux does not have). A regular
    file with `parent_doc` (its parent's entry, unchanged by the change rule) takes its xattrs from
    there: setting or removing one changes the file's ctime, which the rule compares."""
    mode = st.st_mode
    if stat.S_ISREG(mode):  # most entries: one positional call
        return Entry(
            rel,
            "file",
            stat.S_IMODE(mode),
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns,
            st.st_size,
            st.st_ctime_ns,
            st.st_ino,
            None,
            None,
            st.st_blocks * 512 < st.st_size,
            _xattrs(full) if parent_doc is None else dict(parent_doc.get("xattrs") or {}),
            [],
            st.st_dev,
            parent_doc,
        )
    rdev: list[int] | None = None
    if stat.S_ISDIR(mode):
        kind, target, xattrs = "dir", None, _xattrs(full)
    elif stat.S_ISLNK(mode):
        kind, target, xattrs = "symlink", os.readlink(full), {}
    elif stat.S_ISFIFO(mode):
        kind, target, xattrs = "fifo", None, {}
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind, target, xattrs = ("chardev" if stat.S_ISCHR(mode) else "blockdev"), None, {}
        rdev = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    else:
        return None
    return Entry(
        path=rel,
        type=kind,
        mode=stat.S_IMODE(mode),
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        target=target,
        rdev=rdev,
        xattrs=xattrs,
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


def walk_tree(root: Path, watch: SizeWatch | None = None, reusable: Reusable | None = None) -> Walk:
    """Every entry under `root` in a stable order (depth first, names sorted); unreadable paths are
    collected, not fatal. `watch` is told of each entry the backup will read, before the walk enters
    it. A regular file for which `reusable` gives its parent's entry is not asked for its xattrs (a
    system call per file: a fifth of an unchanged tree's walk) and is not counted by `watch`: its
    xattrs come from that entry, which the file's entry keeps (`parent_doc`). Directories are opened
    one level at a time from the root's descriptor without following a link, so a directory swapped
    for a symlink during the walk is an error naming it, never a walk outside the source."""
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
    base = str(root)
    # One loop over an explicit stack of open directories (each with the rest of its sorted listing):
    # a recursive generator passed every entry up through one frame per level.
    stack: list[tuple[int, str, Iterator[os.DirEntry[str]]]] = [(root_fd, "", _listing(root_fd, "", walk))]
    try:
        while stack:
            dir_fd, rel_dir, items = stack[-1]
            prefix = f"{rel_dir}/" if rel_dir else ""
            for item in items:
                name = item.name
                rel = prefix + name
                try:
                    st = item.stat(follow_symlinks=False)
                except OSError as exc:
                    walk.errors.append({"path": rel, "error": exc.strerror or exc.__class__.__name__})
                    continue
                full = f"/proc/self/fd/{dir_fd}/{name}" if _FD_PATHS else os.path.join(base, rel)
                mode = st.st_mode
                doc = reusable(rel, st) if reusable is not None and stat.S_ISREG(mode) else None
                entry = entry_from_stat(rel, full, st, doc)
                if entry is None:
                    walk.skipped.append({"path": rel, "reason": SOCKET_SKIPPED})
                    continue
                if st.st_nlink > 1:
                    entry = links.link(entry, st)
                walk.entries.append(entry)
                if watch is not None and doc is None:
                    watch.add(entry)
                if stat.S_ISDIR(mode):
                    child = _open_subdir(dir_fd, name, rel, st, walk)
                    if child is not None:
                        stack.append((child, rel, _listing(child, rel, walk)))
                        break  # into it; this directory's listing goes on once the child's is done
            else:
                stack.pop()
                os.close(dir_fd)
    finally:
        for dir_fd, _, _ in stack:
            os.close(dir_fd)
    return walk


_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: A directory's entries, named through its open descriptor: readlink and xattrs of `/proc/self/fd/N/name`
#: cannot follow a directory swapped for a symlink meanwhile.
_FD_PATHS = os.path.isdir("/proc/self/fd")


def _by_name(item: os.DirEntry[str]) -> str:
    return item.name


def _listing(dir_fd: int, rel_dir: str, walk: Walk) -> Iterator[os.DirEntry[str]]:
    """The entries of an open directory, sorted by name (none, and an error naming it, if unreadable)."""
    try:
        with os.scandir(dir_fd) as it:
            return iter(sorted(it, key=_by_name))
    except OSError as exc:
        walk.errors.append({"path": rel_dir or ".", "error": exc.strerror or exc.__class__.__name__})
        return iter(())


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
