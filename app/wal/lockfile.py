"""Detached helper processes (the prefetcher, the pusher): their lock, one per spool directory, an
exclusive `flock` held for the helper's life and released by the kernel when it dies however it dies;
and starting one, as a new process or as a fork of a process that has already loaded what it needs.

Standard library only: the fast paths of `wal fetch` and `wal push` use it before anything else loads.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

#: a helper checking for a live owner holds the lock for an instant: a starting helper tries this often
TAKE_ATTEMPTS = 20
TAKE_PAUSE = 0.005


def take(path: Path, owner: str) -> int | None:
    """Take the lock at `path` and write `owner` into it: the descriptor to keep open, or None if held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    for attempt in range(TAKE_ATTEMPTS):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt == TAKE_ATTEMPTS - 1:
                os.close(fd)
                return None
            time.sleep(TAKE_PAUSE)
    os.ftruncate(fd, 0)
    os.write(fd, f"{owner}\n".encode())
    return fd


def is_held(path: Path) -> bool:
    """Whether a live process holds the lock at `path`."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken just now
    return False


def owner(path: Path) -> str | None:
    """What the live holder of the lock at `path` wrote into it, or None if nobody holds it."""
    if not is_held(path):
        return None
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def spawn(command: list[str], log: Path) -> None:
    """Start `command` detached (its own session, no terminal), its output appended to `log`."""
    import subprocess  # ~5 ms: only when a helper is started

    with open(log, "ab") as out:
        subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            close_fds=True,
        )


def is_single_threaded() -> bool:
    """Whether this process runs one thread only, native ones (a library's thread pool) included."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return False  # cannot tell: assume not


def fork_detached(log: Path) -> bool | None:
    """Fork this process into a detached helper: True in the helper (its own session, stdin from
    /dev/null, output appended to `log`), False in the caller, which goes on as before; None, without
    forking, if another thread runs (it would be missing in the helper, and whatever waits on it hang).

    For a command's process only, never a library caller's. The helper must leave with `os._exit`: what
    follows the fork in the caller (its exit, atexit handlers) is not the helper's. Whatever the caller
    had open stays open in the helper; open afresh what it uses.
    """
    if not is_single_threaded():
        return None
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork():
        return False
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    return True
