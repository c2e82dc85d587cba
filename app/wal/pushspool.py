"""The push spool (docs/WAL.md section 3, asynchronous push): acknowledgements of the WAL files the
pusher has archived ahead of PostgreSQL's archive_command, the pusher's errors, its lock and its
wake-up pipe.

Standard library and blake3 only: `app/cli/entry.py` answers an acknowledged `wal push` with it before
the CLI framework, settings, catalog or keys are loaded.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import blake3

from app.wal import lockfile, names
from app.wal.spool import STALE_TEMP, file_digest, write_atomically

PUSH_DIRNAME = ".equisplit-dr-push"
ARCHIVE_STATUS = "archive_status"
READY = ".ready"
ACK = ".ok"
ERROR = ".error"
LOCK = ".lock"
WAKE = ".wake"
STOP = ".stop"
LOG = "pusher.log"

#: seconds an archive_command waits for the pusher's acknowledgement before it pushes the file itself
ACK_WAIT = 60.0
ACK_POLL = 0.002
#: seconds between two checks that the pusher is alive, while waiting
ALIVE_POLL = 0.05

ASYNC_ENV = "WAL_PUSH_ASYNC"
#: the environment deciding where and how a pusher archives; an acknowledgement written by a pusher
#: started with other values does not count (the master key is left out: it never decides where)
FINGERPRINT_ENV = (
    "EQUISPLIT_DR_HOME",
    "HOME",
    "DATABASE_URL",
    "BACKUP_STORAGE_URL",
    "BACKUP_ENCRYPTION_KEY_FILE",
    "BACKUP_COMPRESSION",
    "WAL_COMPRESSION_LEVEL",
)
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


def async_enabled(environ: Mapping[str, str]) -> bool | None:
    """WAL_PUSH_ASYNC as the settings read it (default true); None if malformed (the settings report it)."""
    value = environ.get(ASYNC_ENV)
    if value is None:
        return True
    word = value.lower()
    return True if word in _TRUE else False if word in _FALSE else None


def fingerprint(environ: Mapping[str, str], cwd: str | None = None) -> str:
    """A digest of the settings that decide where WAL goes, and of the directory they resolve against."""
    hasher = blake3.blake3()
    for name in FINGERPRINT_ENV:
        hasher.update(f"{name}={environ.get(name, '')}\0".encode())
    hasher.update(f"cwd={cwd or os.getcwd()}\0python={sys.executable}".encode())
    return hasher.hexdigest(length=16)


def ready_files(status_dir: Path, *, exclude: str, limit: int) -> list[str]:
    """Up to `limit` WAL files PostgreSQL marked ready, in its archiver's order: history files first."""
    try:
        entries = os.listdir(status_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    ready = [entry[: -len(READY)] for entry in entries if entry.endswith(READY)]
    wanted = [name for name in ready if name != exclude and names.is_wal_name(name)]
    wanted.sort(key=lambda name: (not name.endswith(".history"), name))
    return wanted[:limit]


class Ack(NamedTuple):
    """What the pusher wrote for a file it archived: the digest of the bytes and its fingerprint."""

    digest: str
    fingerprint: str


class Owner(NamedTuple):
    pid: int
    fingerprint: str


class PushSpool:
    """The push spool of one source for the WAL directory `wal_dir`: `<root>/<source>/`."""

    def __init__(self, wal_dir: Path, source: str, root: Path | None = None) -> None:
        self.wal_dir = Path(os.path.abspath(wal_dir))
        self.source = source
        self.root = Path(os.path.abspath(root)) if root is not None else self.wal_dir / PUSH_DIRNAME
        self.dir = self.root / source
        self.status_dir = self.wal_dir / ARCHIVE_STATUS

    @classmethod
    def for_file(cls, path: Path, source: str, root: Path | None = None) -> PushSpool:
        return cls(Path(os.path.abspath(path)).parent, source, root)

    def is_ready(self, name: str) -> bool:
        """Whether PostgreSQL has marked `name` ready for archiving (and not yet archived)."""
        return os.path.exists(self.status_dir / f"{name}{READY}")

    # Acknowledgements and errors ----------------------------------------------------------------------

    def ack(self, name: str) -> Ack | None:
        try:
            digest, mark = (self.dir / f"{name}{ACK}").read_text().split()
        except (FileNotFoundError, ValueError):
            return None
        return Ack(digest, mark)

    def write_ack(self, name: str, ack: Ack) -> None:
        """Acknowledge `name`: the caller has made it durable and recorded. Atomic: a crash leaves no ack."""
        write_atomically(self.dir / f"{name}{ACK}", f"{ack.digest} {ack.fingerprint}\n".encode())
        (self.dir / f"{name}{ERROR}").unlink(missing_ok=True)

    def error(self, name: str) -> str | None:
        try:
            return (self.dir / f"{name}{ERROR}").read_text()
        except FileNotFoundError:
            return None

    def write_error(self, name: str, message: str) -> None:
        write_atomically(self.dir / f"{name}{ERROR}", message.encode())

    def noted(self) -> list[tuple[str, str]]:
        """(WAL name, file) of every acknowledgement and error the spool holds."""
        try:
            entries = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            name, dot, suffix = entry.rpartition(".")
            if dot and not entry.startswith(".") and f".{suffix}" in (ACK, ERROR):
                found.append((name, entry))
        return found

    def prune(self, ready: set[str]) -> None:
        """Delete the acknowledgements and errors of files PostgreSQL no longer has marked ready, and
        temporary files a writer killed mid-write left behind."""
        for name, entry in self.noted():
            if name not in ready:
                (self.dir / entry).unlink(missing_ok=True)
        now = time.time()
        with contextlib.suppress(FileNotFoundError), os.scandir(self.dir) as entries:
            for temp in entries:
                if temp.name.startswith(".") and ".tmp-" in temp.name:
                    with contextlib.suppress(FileNotFoundError):
                        if now - temp.stat().st_mtime > STALE_TEMP:
                            os.unlink(temp.path)

    # The pusher --------------------------------------------------------------------------------------

    def lock(self, mark: str) -> int | None:
        """Take the pusher's lock: its descriptor (hold it open), or None if another pusher holds it."""
        return lockfile.take(self.dir / LOCK, f"{os.getpid()} {mark}")

    def pusher(self) -> Owner | None:
        """The live pusher of this spool, if any."""
        held = lockfile.owner(self.dir / LOCK)
        if held is None:
            return None
        try:
            pid, mark = held.split()
            return Owner(int(pid), mark)
        except ValueError:
            return Owner(0, "")  # it is writing its lock: alive, settings not yet known

    def open_wake(self) -> int:
        """The pusher's end of the wake-up pipe (read and write, so it never sees end of file)."""
        path = self.dir / WAKE
        with contextlib.suppress(FileExistsError):
            os.mkfifo(path, 0o600)
        return os.open(path, os.O_RDWR | os.O_NONBLOCK)

    def wake(self) -> None:
        """Tell the pusher to look at archive_status now (nothing happens if no pusher listens)."""
        try:
            fd = os.open(self.dir / WAKE, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no pusher has it open; ENOENT: none ever started
            return
        try:
            os.write(fd, b"\0")
        except OSError as error:
            # EAGAIN: a full pipe wakes it anyway; EPIPE: the pusher closed its end since the open (it
            # is leaving), so nothing listens, as with ENXIO above
            if error.errno not in (errno.EAGAIN, errno.EPIPE):
                raise
        finally:
            os.close(fd)

    def request_stop(self) -> None:
        """Ask the pusher to exit (it was started with other settings)."""
        (self.dir / STOP).touch()
        self.wake()

    def stop_requested(self) -> bool:
        return os.path.exists(self.dir / STOP)

    def clear_stop(self) -> None:
        (self.dir / STOP).unlink(missing_ok=True)

    # The archive_command's side ------------------------------------------------------------------------

    def await_ack(self, path: Path, mark: str, timeout: float = ACK_WAIT) -> bool:
        """Whether the pusher has archived `path` (durable and recorded), waiting for it while it lives.

        True only for an acknowledgement of these very bytes by a pusher with these settings. False
        means: push the file directly (the pusher is missing, stale, started with other settings,
        failed on this file, or did not answer in `timeout` seconds); the direct push reports any error.
        """
        name = path.name
        if not self.is_ready(name):
            return False  # not a file PostgreSQL's archiver is asking for: the pusher never sees it
        deadline = time.monotonic() + timeout
        next_check = 0.0
        woken = False
        while True:
            ack = self.ack(name)
            if ack is not None:
                return _acknowledges(ack, path, mark)
            if self.error(name) is not None:
                return False
            now = time.monotonic()
            if now >= next_check:
                owner = self.pusher()
                if owner is None:
                    ack = self.ack(name)  # it may have acknowledged just before it left
                    return ack is not None and _acknowledges(ack, path, mark)
                if owner.fingerprint and owner.fingerprint != mark:
                    self.request_stop()
                    return False
                if not woken:
                    self.wake()
                    woken = True
                next_check = now + ALIVE_POLL
            if now >= deadline:
                return False
            time.sleep(ACK_POLL)


def _acknowledges(ack: Ack, path: Path, mark: str) -> bool:
    """Whether `ack` is for the bytes now at `path`, from a pusher with the settings `mark`."""
    if ack.fingerprint != mark:
        return False
    try:
        return ack.digest == file_digest(path)
    except OSError:
        return False  # the direct push says what is wrong with the file
