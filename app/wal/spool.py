"""The fetch spool (docs/WAL.md section 4): segments fetched ahead of recovery, verified by a digest in
their file name; the position recovery has reached; the prefetcher's lock.

Standard library and blake3 only: `app/cli/entry.py` serves a spool hit before the CLI framework,
settings, catalog or keys are loaded, because loading them costs more than a segment.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import blake3

from app.wal import lockfile, names

SPOOL_DIRNAME = ".equisplit-dr-spool"
TEMP_PREFIX = ".tmp-"
LOCK = ".lock"
WANT = ".want"
STARTING = ".starting"
LOG = "prefetch.log"
#: hex digits of the unkeyed BLAKE3 digest in a spooled segment's name: `<segment>.<digest>`
DIGEST_HEX = 32
#: seconds a just-started prefetcher has to take the lock before another is started
START_GRACE = 10.0
#: seconds a fetch waits for a segment the prefetcher is downloading
IN_FLIGHT_WAIT = 120.0
#: seconds after which a temporary file nobody writes to is a dead writer's leftover
STALE_TEMP = 60.0


def default_root(dest: Path) -> Path:
    """The spool root beside `dest`: `pg_wal/.equisplit-dr-spool` for PostgreSQL's `pg_wal/RECOVERYXLOG`."""
    return Path(os.path.abspath(dest)).parent / SPOOL_DIRNAME


def digest(data: bytes | memoryview) -> str:
    # One thread: blake3's thread pool would hang a process forked after it started (a helper), for a
    # gain of ~2 ms on a 16 MiB segment.
    return blake3.blake3(data).hexdigest(length=DIGEST_HEX // 2)


def file_digest(path: Path) -> str:
    """The digest of a file's bytes, hashed through mmap: no copy into Python."""
    hasher = blake3.blake3()
    if path.stat().st_size:  # an empty file cannot be mapped
        hasher.update_mmap(path)
    return hasher.hexdigest(length=DIGEST_HEX // 2)


def _create_temp(directory: Path, prefix: str) -> tuple[int, Path]:
    """A new file `<prefix><random>` in `directory`, opened for writing (tempfile costs ~11 ms to import)."""
    while True:
        path = directory / f"{prefix}{os.urandom(6).hex()}"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), path
        except FileExistsError:
            continue


def write_atomically(dest: Path, data: bytes | memoryview) -> None:
    """Write `dest` through a temporary file in its directory and a rename: never a partial `dest`."""
    fd, temp = _create_temp(dest.parent, f".{dest.name}.tmp-")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temp, dest)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


class Spool:
    """The spool of one source under `root`: `<root>/<source>/`."""

    def __init__(self, root: Path, source: str) -> None:
        self.root = root
        self.source = source
        self.dir = root / source

    # Spooled segments -------------------------------------------------------------------------------

    def spooled(self) -> dict[str, Path]:
        """Segment name -> spooled file."""
        found: dict[str, Path] = {}
        try:
            with os.scandir(self.dir) as entries:
                for entry in entries:
                    name, dot, tail = entry.name.partition(".")
                    if dot and len(tail) == DIGEST_HEX and len(name) == 24 and not entry.name.startswith("."):
                        found[name] = Path(entry.path)
        except FileNotFoundError:
            pass
        return found

    def take(self, name: str, dest: Path) -> int | None:
        """Move spooled segment `name` to `dest` if its bytes match its digest; its size, else None.

        A file that fails the check is deleted, so the caller fetches the segment from storage.
        """
        path = self.spooled().get(name)
        if path is None:
            return None
        try:
            size = path.stat().st_size
            if file_digest(path) != path.name[-DIGEST_HEX:]:
                path.unlink(missing_ok=True)
                return None
            try:
                os.replace(path, dest)
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
                write_atomically(dest, path.read_bytes())
                path.unlink(missing_ok=True)
        except FileNotFoundError:  # pruned by the prefetcher meanwhile
            return None
        return size

    def write(self, name: str, fetch: Callable[[], bytes]) -> None:
        """Fetch segment `name` into the spool: a temporary file while it downloads, then renamed to
        `<name>.<digest>`. The temporary file exists from the start, so a fetch can wait for it."""
        fd, temp = _create_temp(self.dir, f"{TEMP_PREFIX}{name}-")
        try:
            with os.fdopen(fd, "wb") as file:
                data = fetch()
                file.write(data)
            os.replace(temp, self.dir / f"{name}.{digest(data)}")
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def in_flight_names(self) -> set[str]:
        """Segments being written into the spool now (a live writer's temporary file exists)."""
        found = set()
        now = time.time()
        try:
            with os.scandir(self.dir) as entries:
                for entry in entries:
                    if entry.name.startswith(TEMP_PREFIX):
                        try:
                            fresh = now - entry.stat().st_mtime < STALE_TEMP
                        except FileNotFoundError:
                            continue
                        if fresh:
                            found.add(entry.name[len(TEMP_PREFIX) :].rsplit("-", 1)[0])
        except FileNotFoundError:
            pass
        return found

    def in_flight(self, name: str) -> bool:
        return name in self.in_flight_names()

    def wait_for(self, name: str, timeout: float = IN_FLIGHT_WAIT) -> bool:
        """Wait while the live prefetcher downloads `name`; whether it is spooled now. (A fetch fills the
        spool only before it returns, so during the next fetch only the prefetcher can be writing.)"""
        deadline = time.monotonic() + timeout
        while self.in_flight(name) and self.prefetcher_alive() and time.monotonic() < deadline:
            time.sleep(0.002)
        return name in self.spooled()

    def prune(self, keep: set[str]) -> None:
        """Delete spooled segments outside `keep`, and temporary files their writer left behind."""
        for name, path in self.spooled().items():
            if name not in keep:
                path.unlink(missing_ok=True)
        now = time.time()
        try:
            with os.scandir(self.dir) as entries:
                for entry in entries:
                    if entry.name.startswith(TEMP_PREFIX):
                        with contextlib.suppress(FileNotFoundError):
                            if now - entry.stat().st_mtime > STALE_TEMP:
                                os.unlink(entry.path)
        except FileNotFoundError:
            pass

    def clear(self) -> None:
        """Delete every spooled segment, temporary file and the position; keep the lock and the log."""
        try:
            entries = os.listdir(self.dir)
        except FileNotFoundError:
            return
        for entry in entries:
            if entry not in (LOCK, LOG):
                (self.dir / entry).unlink(missing_ok=True)

    # Position and prefetcher -------------------------------------------------------------------------

    def set_want(self, name: str, segment_size: int) -> None:
        """Record that recovery has reached segment `name` (atomically: the prefetcher reads it)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self.dir / WANT, f"{name} {segment_size}\n".encode())

    def want(self) -> tuple[names.WalName, int] | None:
        try:
            name, size = (self.dir / WANT).read_text().split()
            wal = names.parse(name)
            if not wal.is_segment or not names.is_segment_size(int(size)):
                return None
            return wal, int(size)
        except (FileNotFoundError, ValueError):
            return None

    def lock(self) -> int | None:
        """Take the prefetcher's lock: its file descriptor (hold it open), or None if another holds it."""
        fd = lockfile.take(self.dir / LOCK, str(os.getpid()))
        if fd is not None:
            (self.dir / STARTING).unlink(missing_ok=True)
        return fd

    def prefetcher_alive(self) -> bool:
        """Whether a prefetcher holds the lock, or was started moments ago and will."""
        return lockfile.is_held(self.dir / LOCK) or self._starting()

    def _starting(self) -> bool:
        try:
            return time.time() - (self.dir / STARTING).stat().st_mtime < START_GRACE
        except FileNotFoundError:
            return False

    def prefetcher_pid(self) -> int | None:
        """The pid of the prefetcher holding the lock (for tests and operators), or None."""
        if not self.prefetcher_alive():
            return None
        try:
            return int((self.dir / LOCK).read_text().strip() or 0) or None
        except (FileNotFoundError, ValueError):
            return None

    def ensure_prefetcher(self) -> None:
        """Start a detached prefetcher for this spool unless one runs (it reads its settings itself)."""
        if self.prefetcher_alive():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / STARTING).touch()
        command = [sys.executable, "-m", "app.wal.prefetch", "--source", self.source]
        lockfile.spawn([*command, "--spool", str(self.root)], self.dir / LOG)


def serve_hit(source: str, name: str, dest: Path, root: Path | None = None) -> bool:
    """Serve segment `name` from the spool into `dest` if it is spooled (or being spooled): the fast
    path of `wal fetch`. False when the caller must fetch it from storage."""
    if not names.is_wal_name(name) or not names.parse(name).is_segment:
        return False
    spool = Spool(root or default_root(dest), source)
    if not spool.dir.is_dir():
        return False
    size = spool.take(name, dest)
    if size is None and spool.in_flight(name) and spool.wait_for(name):
        size = spool.take(name, dest)
    if size is None:
        return False
    spool.set_want(name, size)
    spool.ensure_prefetcher()
    return True
