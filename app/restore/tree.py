"""The restore target as a tree of directory file descriptors: every name the restore creates, opens,
renames or changes is resolved one component at a time from the target's own descriptor, with
`O_NOFOLLOW`, so no symlink already in the target is ever followed and no path the kernel sees is
longer than one name (PATH_MAX does not limit how deep a restore goes)."""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import shutil
import stat
import threading
from collections import OrderedDict
from typing import NoReturn

from app.errors import RestoreTargetError

#: Every partial file's name ends with this: `.NAME.<12 hex>.eqdr-partial`, NAME cut short so that the
#: whole stays within NAME_MAX (a file whose name is 255 bytes restores too).
PARTIAL_SUFFIX = ".eqdr-partial"
NAME_MAX = 255
_TOKEN_HEX = 12
_TOKEN_MASK = (1 << 4 * _TOKEN_HEX) - 1
#: The manifest's path of the source root itself (app/sources/files.py: ROOT_PATH): the target.
ROOT = "."

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Directory descriptors kept open at once (the rest are opened again from their nearest open parent).
DIR_CACHE = 128


#: Partial names' tokens: a random start for each process (drawn again in a forked child), counted up
#: from there, so a name is never repeated by one process and two processes' names meet with a chance
#: of about one in 2**48 / files; it is created with O_EXCL in any case.
_tokens = itertools.count(secrets.randbits(4 * _TOKEN_HEX))


def _new_tokens() -> None:
    global _tokens
    _tokens = itertools.count(secrets.randbits(4 * _TOKEN_HEX))


os.register_at_fork(after_in_child=_new_tokens)


def partial_name(name: str) -> str:
    """A fresh temporary name for a file being written as `name`, in the same directory."""
    token = f"{next(_tokens) & _TOKEN_MASK:0{_TOKEN_HEX}x}"
    room = NAME_MAX - len(f"..{token}{PARTIAL_SUFFIX}")
    short = os.fsdecode(os.fsencode(name)[:room])
    return f".{short}.{token}{PARTIAL_SUFFIX}"


def split(rel: str) -> tuple[str, str]:
    """(the parent directory, the name) of a target-relative path; the parent of a top name is ''."""
    parent, _, name = rel.rpartition("/")
    return parent, name


def kind_of(mode: int) -> str:
    """The manifest's word for a file type: dir, file, symlink, or other."""
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


class TargetTree:
    """Directory descriptors of one restore target, shared by a process's threads. `replace`: a
    non-directory where a directory is needed is removed (only with --overwrite), else refused."""

    def __init__(self, root: str, *, replace: bool = False) -> None:
        self.root = root
        self.replace = replace
        try:
            self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            fail(root, "", exc)
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._uses: dict[str, int] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            os.close(self.root_fd)

    def __enter__(self) -> TargetTree:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def dir(self, rel: str, *, create: bool = False) -> _Held:
        """A descriptor of the directory `rel` ('' is the target), held open while in use (`with`).
        `create`: make missing directories (mode 0700 until their metadata is applied)."""
        return _Held(self, "" if rel == ROOT else rel, create)

    def _hold(self, rel: str, create: bool) -> int:
        with self._lock:
            fd = self._open(rel, create)
            if rel:
                self._uses[rel] = self._uses.get(rel, 0) + 1
                self._evict()
        return fd

    def _release(self, rel: str) -> None:
        if rel:
            with self._lock:
                self._uses[rel] -= 1

    def find(self, rel: str) -> int | None:
        """A descriptor of directory `rel` if it exists as a real directory, else None; the caller
        must close it. Nothing is created, nothing followed."""
        rel = "" if rel == ROOT else rel
        fd = os.dup(self.root_fd)
        for name in filter(None, rel.split("/")):
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    return None
                fail(self.root, rel, exc)
            os.close(fd)
            fd = child
        return fd

    def _open(self, rel: str, create: bool) -> int:
        if not rel:
            return self.root_fd
        cached = self._fds.get(rel)
        if cached is not None:
            self._fds.move_to_end(rel)
            return cached
        # the nearest open ancestor, then one name at a time
        parts = rel.split("/")
        depth = len(parts) - 1
        while depth > 0 and "/".join(parts[:depth]) not in self._fds:
            depth -= 1
        fd = self._fds["/".join(parts[:depth])] if depth else self.root_fd
        for i in range(depth, len(parts)):
            here = "/".join(parts[: i + 1])
            fd = self._open_child(fd, parts[i], here, create)
            self._fds[here] = fd
            self._evict(keep=here)  # a deep walk holds one or two descriptors, not one per level
        return fd

    def _open_child(self, parent_fd: int, name: str, rel: str, create: bool) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise RestoreTargetError(
                    f"directory {rel} is missing from the restore target {self.root}"
                ) from None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                fail(self.root, rel, exc)
            if not self.replace:
                raise RestoreTargetError(
                    f"{rel} in the restore target {self.root} is not a directory, and the backup has one "
                    "there",
                    hint="pass --overwrite to replace it, or restore into an empty directory",
                ) from None
            try:  # a symlink or a file where the backup has a directory: removed, never followed
                os.unlink(name, dir_fd=parent_fd)
            except OSError as err:
                fail(self.root, rel, err)
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            fail(self.root, rel, exc)

    def _evict(self, keep: str = "") -> None:
        """Close the least recently used descriptors beyond DIR_CACHE, none in use, not `keep`."""
        if len(self._fds) <= DIR_CACHE:
            return
        for rel in list(self._fds):
            if len(self._fds) <= DIR_CACHE:
                break
            if rel != keep and not self._uses.get(rel):
                os.close(self._fds.pop(rel))
                self._uses.pop(rel, None)

    def remove_dir_at(self, parent_fd: int, name: str, rel: str) -> None:
        """Remove the directory tree `name` (where the backup has a file or a symlink) if replacing,
        else refuse. shutil.rmtree with dir_fd follows no link."""
        if not self.replace:
            raise RestoreTargetError(
                f"{rel} in the restore target {self.root} is a directory, and the backup has a file there",
                hint="pass --overwrite to replace it, or restore into an empty directory",
            )
        shutil.rmtree(name, dir_fd=parent_fd)

    def move_into_place(self, parent_fd: int, temp: str, name: str, rel: str) -> None:
        """Rename `temp` to `name` in one directory; a directory at `name` is removed first (with
        --overwrite) since a rename cannot replace it. A symlink at `name` is replaced, not followed."""
        try:
            os.replace(temp, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                fail(self.root, rel, exc)
            try:
                self.remove_dir_at(parent_fd, name, rel)
                os.replace(temp, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
            except OSError as err:
                fail(self.root, rel, err)


class _Held:
    """A directory descriptor of a TargetTree held while in a `with` block (a class, not a generator:
    a restore takes one for every file it writes)."""

    __slots__ = ("create", "rel", "tree")

    def __init__(self, tree: TargetTree, rel: str, create: bool) -> None:
        self.tree, self.rel, self.create = tree, rel, create

    def __enter__(self) -> int:
        return self.tree._hold(self.rel, self.create)

    def __exit__(self, *_: object) -> None:
        self.tree._release(self.rel)


def fail(root: str, rel: str, exc: OSError) -> NoReturn:
    """Raise a RestoreTargetError naming the path in the target that could not be written."""
    where = f"{rel} in the restore target {root}" if rel else f"the restore target {root}"
    raise RestoreTargetError(
        f"cannot write {where}: {exc.strerror or exc}",
        hint="check the target's permissions and free space",
    ) from None
