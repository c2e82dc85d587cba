"""Opening a source's files for reading without leaving the source, blocking, or reading the wrong file.

Between the walk and the read a file can vanish, be replaced by a FIFO (whose open would block), or a
directory on its path can be swapped for a symlink that leads out of the source. So a file is opened
one path component at a time from a descriptor of the source's root (`openat` with `O_NOFOLLOW`: no
component may be a symlink, except the links the source kind names, e.g. PostgreSQL's
`pg_tblspc/<oid>`), looked at before it is opened (`fstatat`, no link followed: a device or FIFO is
never opened), opened with `O_NONBLOCK | O_NOFOLLOW`, and compared (`fstat`: type, device, inode) with
what the walk saw. Whatever differs is a `ChangedUnderWalk` naming why, never a hang or an escape.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Collection
from dataclasses import dataclass

#: Reasons a file was not read as the walk saw it (the `code` of the backup's warning).
VANISHED = "vanished"  # gone, or a directory on its path is gone
REPLACED = "replaced"  # something else than a regular file is there now: not opened, not followed
SWAPPED = "swapped"  # another regular file is there now (another inode or device): that one was read

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class ChangedUnderWalk(Exception):
    """The path no longer holds the file the walk saw; `code` is VANISHED, REPLACED or SWAPPED."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Seen:
    """What the walk saw of a file: its device and inode (0: not known, not compared)."""

    device: int = 0
    inode: int = 0


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


#: Directories a SourceRoot keeps open (a unit's files sit in few of them): opening every component of
#: every path again cost about as much as reading a small file. Past this many, opened per file.
OPEN_DIRS = 256


class SourceRoot:
    """The root of a source, to open files below it by their manifest path (`a/b/c`). Thread-safe.
    Directories, once opened safely, stay open (up to OPEN_DIRS) until the SourceRoot is dropped: a
    directory swapped for a link later is not followed, as the kept descriptor is the one checked."""

    def __init__(self, root: str, links: Collection[str] = ()) -> None:
        self.root = root
        #: Relative paths of symlinks that belong to the source and may be followed (PostgreSQL's
        #: `pg_tblspc/<oid>`); no other symlink on a path is.
        self.links = frozenset(links)
        self._dirs: dict[str, int] = {}  # "" is the root
        self._lock = threading.Lock()

    def __del__(self) -> None:  # no thread can use a descriptor once the SourceRoot is unreachable
        for fd in getattr(self, "_dirs", {}).values():
            os.close(fd)

    def open_file(self, rel: str) -> tuple[int, os.stat_result]:
        """An open descriptor of the regular file at `rel`, and its fstat. ChangedUnderWalk (VANISHED or
        REPLACED) when it or a directory on its path is gone or is something else now; any other
        OSError (permissions, I/O) propagates."""
        parts = rel.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"not a path inside the source: {rel!r}")
        parent, owned = self._directory(parts[:-1])
        try:
            return _open_leaf(parent, parts[-1])
        finally:
            if owned:
                os.close(parent)

    def _directory(self, parts: list[str]) -> tuple[int, bool]:
        """A descriptor of the directory `parts` below the root, and whether the caller must close it."""
        with self._lock:
            depth = len(parts)
            while depth >= 0 and "/".join(parts[:depth]) not in self._dirs:
                depth -= 1
            if depth >= 0:
                current, owned = self._dirs["/".join(parts[:depth])], False
        if depth < 0:
            try:
                opened = os.open(self.root, _OPEN_DIR)
            except FileNotFoundError:
                raise ChangedUnderWalk(
                    VANISHED, "vanished after the walk (the source's directory is gone)"
                ) from None
            current, owned = self._keep("", opened)
            depth = 0
        for index in range(depth, len(parts)):
            rel = "/".join(parts[: index + 1])
            try:
                child = self._open_dir(current, parts[index], rel)
            finally:
                if owned:
                    os.close(current)
            current, owned = self._keep(rel, child)
        return current, owned

    def _keep(self, rel: str, fd: int) -> tuple[int, bool]:
        """Keep `fd` as directory `rel` if there is room; the descriptor to use, and whether to close it."""
        with self._lock:
            kept = self._dirs.get(rel)
            if kept is None and len(self._dirs) < OPEN_DIRS:
                self._dirs[rel] = fd
                return fd, False
        if kept is not None:  # another thread opened it meanwhile
            os.close(fd)
            return kept, False
        return fd, True

    def _open_dir(self, parent: int, name: str, rel: str) -> int:
        flags = _OPEN_DIR if rel in self.links else _OPEN_DIR | os.O_NOFOLLOW
        try:
            return os.open(name, flags, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                raise
            try:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except OSError:
                raise ChangedUnderWalk(
                    VANISHED, f"vanished after the walk (directory {rel} is gone)"
                ) from None
            raise ChangedUnderWalk(
                REPLACED, f"directory {rel} was replaced by {_kind(st.st_mode)} after the walk; not followed"
            ) from None


def swapped(st: os.stat_result, seen: Seen) -> bool:
    """Whether the opened file (`st`) is another file than the walk saw (`seen`: 0 = not known)."""
    return bool(seen.inode and st.st_ino != seen.inode) or bool(seen.device and st.st_dev != seen.device)


def swapped_warning() -> ChangedUnderWalk:
    return ChangedUnderWalk(
        SWAPPED, "replaced by another file after the walk (another inode); the new file was read"
    )


def _open_leaf(parent: int, name: str) -> tuple[int, os.stat_result]:
    try:
        before = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        raise ChangedUnderWalk(VANISHED, "vanished after the walk") from None
    if not stat.S_ISREG(before.st_mode):  # a FIFO or device is never opened: its open may block or act
        raise _replaced(before)
    try:
        fd = os.open(name, _OPEN_FILE, dir_fd=parent)
    except (FileNotFoundError, NotADirectoryError):
        raise ChangedUnderWalk(VANISHED, "vanished after the walk") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ChangedUnderWalk(
                REPLACED, "replaced by a symbolic link after the walk; not followed"
            ) from None
        raise
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):  # swapped between the look and the open
        os.close(fd)
        raise _replaced(st)
    return fd, st


def _replaced(st: os.stat_result) -> ChangedUnderWalk:
    return ChangedUnderWalk(REPLACED, f"replaced by {_kind(st.st_mode)} after the walk; not read")
