"""Helper processes (app/wal/lockfile.py): one lock holder at a time, and forking into a helper only when
nothing else runs in the process, so the helper never waits on a thread it does not have."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from app.wal import lockfile

PROJECT = Path(__file__).resolve().parents[3]


def test_one_holder_and_what_it_wrote(tmp_path: Path) -> None:
    lock = tmp_path / "spool" / ".lock"
    assert not lockfile.is_held(lock) and lockfile.owner(lock) is None
    fd = lockfile.take(lock, "123 abc")
    assert fd is not None
    try:
        assert lockfile.is_held(lock) and lockfile.owner(lock) == "123 abc"
        assert lockfile.take(lock, "456 def") is None
    finally:
        os.close(fd)
    assert not lockfile.is_held(lock)


def test_no_fork_while_another_thread_runs(tmp_path: Path) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not lockfile.is_single_threaded()
        assert lockfile.fork_detached(tmp_path / "helper.log") is None
    finally:
        stop.set()
        thread.join()


def test_a_forked_helper_hashes_after_its_parent_did(tmp_path: Path) -> None:
    """The parent hashed a segment before forking (a fetch served from the spool): the helper must be able
    to hash too (blake3's thread pool, had the parent started one, would not exist in the child)."""
    script = f"""
import os, sys
from pathlib import Path
from app.wal import lockfile
from app.wal.spool import digest
data = os.urandom(16 << 20)
parent = digest(data)
if lockfile.fork_detached(Path({str(tmp_path / "helper.log")!r})):
    Path({str(tmp_path / "child.tmp")!r}).write_text(digest(data))
    os.rename({str(tmp_path / "child.tmp")!r}, {str(tmp_path / "child")!r})
    os._exit(0)
print(parent)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    child = tmp_path / "child"
    deadline = time.monotonic() + 30
    while not child.exists():
        assert time.monotonic() < deadline, "no helper hashed"
        time.sleep(0.01)
    assert child.read_text() == done.stdout.strip()
