"""Local storage: objects as files under a root directory, written atomically and durably."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from app.errors import ObjectNotFoundError, StorageError
from app.storage.base import KINDS, Capabilities, ObjectInfo, PutOptions
from app.storage.retry import permanent

#: Files a put is still writing start with this; no object name may.
TEMP_PREFIX = ".tmp-"

_MAX_NAME_BYTES = 255  # the longest file name common file systems accept
_PERMANENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG}


def check_address(kind: str, name: str) -> None:
    """Refuse a kind outside KINDS, or a name no backend can store as one flat, safe object name.

    Every backend applies the same rules, so a repository can move between them.
    """
    check_kind(kind)
    check_prefix(kind, name)
    if not name or name.startswith(".") or len(name.encode()) > _MAX_NAME_BYTES:
        raise permanent(
            StorageError(
                f"invalid object name {kind}/{name!r}",
                hint=f"a name is 1 to {_MAX_NAME_BYTES} bytes and does not start with '.'",
            )
        )


def check_kind(kind: str) -> None:
    """Refuse a kind outside KINDS."""
    if kind not in KINDS:
        raise permanent(StorageError(f"unknown object kind {kind!r}", hint=f"use one of {sorted(KINDS)}"))


def check_prefix(kind: str, prefix: str) -> None:
    """Refuse a name or name prefix holding a path separator, '..' or NUL."""
    if "/" in prefix or "\\" in prefix or ".." in prefix or "\x00" in prefix:
        raise permanent(
            StorageError(
                f"invalid object name {kind}/{prefix!r}",
                hint="a name holds no '/', '\\', '..' or NUL character",
            )
        )


def check_range(offset: int, length: int | None) -> None:
    """Refuse a negative offset or length."""
    if offset < 0 or (length is not None and length < 0):
        raise permanent(StorageError(f"invalid byte range: offset {offset}, length {length}"))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage:
    """Objects at `<root>/<kind>/<name>`; packs at `<root>/packs/<name[:2]>/<name>`.

    A put writes a temporary file beside the object, fsyncs it, renames it over the object and fsyncs
    the directory, so a reader or a crash sees the old object or the new one, never a part.
    """

    capabilities = Capabilities(ranged_reads=True, storage_classes=False, durable_put=True)

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()

    @property
    def location(self) -> str:
        return self.root.as_uri()

    def _path(self, kind: str, name: str) -> Path:
        check_address(kind, name)
        if kind == "packs":
            return self.root / kind / name[:2] / name
        return self.root / kind / name

    def _fail(self, verb: str, kind: str, name: str, error: OSError) -> StorageError:
        failure = StorageError(
            f"cannot {verb} object {kind}/{name} in storage {self.location}: {error.strerror or error}",
            hint="check that the directory exists, is writable and has free space",
        )
        return permanent(failure) if error.errno in _PERMANENT_ERRNOS else failure

    def _make_dirs(self, directory: Path) -> None:
        if directory.is_dir():
            return
        missing = [directory, *(p for p in directory.parents if not p.exists())]
        directory.mkdir(parents=True, exist_ok=True)
        # A new directory entry is durable only once its parent is synced.
        for created in reversed(missing):
            _fsync_dir(created.parent)

    def put(self, kind: str, name: str, data: bytes | memoryview, options: PutOptions | None = None) -> None:
        path = self._path(kind, name)
        try:
            self._make_dirs(path.parent)
            fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temp, path)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
            _fsync_dir(path.parent)
        except OSError as error:
            raise self._fail("write", kind, name, error) from error

    def get(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(kind, name)
        check_range(offset, length)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise ObjectNotFoundError(kind, name, self.location) from None
        except OSError as error:
            raise self._fail("read", kind, name, error) from error
        try:
            if length is None:
                length = max(0, os.fstat(fd).st_size - offset)
            parts: list[bytes] = []
            got = 0
            while got < length:
                part = os.pread(fd, length - got, offset + got)
                if not part:
                    break
                parts.append(part)
                got += len(part)
            return b"".join(parts)
        except OSError as error:
            raise self._fail("read", kind, name, error) from error
        finally:
            os.close(fd)

    def stat(self, kind: str, name: str) -> ObjectInfo | None:
        path = self._path(kind, name)
        try:
            return ObjectInfo(kind, name, path.stat().st_size)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise self._fail("stat", kind, name, error) from error

    def list(self, kind: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object of `kind` whose name starts with `prefix`, in name order."""
        check_kind(kind)
        check_prefix(kind, prefix)
        return self._list(kind, prefix)

    def _list(self, kind: str, prefix: str) -> Iterator[ObjectInfo]:
        base = self.root / kind
        try:
            if kind != "packs":
                yield from self._scan(kind, base, prefix)
                return
            for fan in self._sorted_entries(base):
                if len(fan.name) <= 2 and fan.name.startswith(prefix[:2]) and fan.is_dir():
                    yield from self._scan(kind, Path(fan.path), prefix)
        except OSError as error:
            raise self._fail("list", kind, prefix + "*", error) from error

    @staticmethod
    def _sorted_entries(directory: Path) -> Iterator[os.DirEntry[str]]:
        try:
            with os.scandir(directory) as entries:
                found = sorted(entries, key=lambda entry: entry.name)
        except FileNotFoundError:
            return
        yield from found

    def _scan(self, kind: str, directory: Path, prefix: str) -> Iterator[ObjectInfo]:
        for entry in self._sorted_entries(directory):
            if entry.name.startswith(TEMP_PREFIX) or not entry.name.startswith(prefix):
                continue
            try:
                if entry.is_file(follow_symlinks=False):
                    yield ObjectInfo(kind, entry.name, entry.stat(follow_symlinks=False).st_size)
            except FileNotFoundError:  # deleted while listing
                continue

    def temporaries(self) -> Iterator[tuple[str, float]]:
        """Files puts left behind (a writer killed before its rename), as (path relative to the root,
        mtime in seconds). Not part of the Storage protocol: no other backend leaves any."""
        for kind in sorted(KINDS):
            base = self.root / kind
            dirs = [base]
            if kind == "packs":
                dirs += [Path(e.path) for e in self._sorted_entries(base) if len(e.name) <= 2 and e.is_dir()]
            for directory in dirs:
                for entry in self._sorted_entries(directory):
                    if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
                        try:
                            mtime = entry.stat(follow_symlinks=False).st_mtime
                        except FileNotFoundError:  # its put finished or it was removed meanwhile
                            continue
                        yield str(Path(entry.path).relative_to(self.root)), mtime

    def remove_temporary(self, relative: str) -> None:
        """Remove one file `temporaries` named; refuses anything else."""
        path = (self.root / relative).absolute()
        if (
            not path.name.startswith(TEMP_PREFIX)
            or self.root not in path.parents
            or ".." in Path(relative).parts
        ):
            raise permanent(StorageError(f"not a temporary file of storage {self.location}: {relative}"))
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            raise self._fail("delete", "temporary", relative, error) from error

    def delete(self, kind: str, name: str) -> None:
        path = self._path(kind, name)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as error:
            raise self._fail("delete", kind, name, error) from error
        try:
            _fsync_dir(path.parent)
        except OSError as error:
            raise self._fail("delete", kind, name, error) from error

    def close(self) -> None:
        """Nothing to release."""
