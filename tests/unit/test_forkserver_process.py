"""A job's fork server ends at once when the job stops it (app/forkserver_process.py): no tear-down of
what it imported, its exit status kept, and nothing it wrote lost."""

from __future__ import annotations

import subprocess
import sys
from multiprocessing import forkserver as mp_forkserver

from app import forkserver

#: A module-level object whose finalizer runs only in an interpreter's tear-down.
SCRIPT = """
import sys
import app.forkserver_process

class TornDown:
    def __del__(self):
        sys.stderr.write("torn down\\n")

kept = TornDown()
sys.stdout.write("written, not flushed")
{end}
"""


def _run(end: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.format(end=end)], capture_output=True, text=True, timeout=60
    )


def test_it_ends_without_tearing_down_and_keeps_what_it_wrote() -> None:
    done = _run("raise SystemExit")  # as the fork server ends when the job closes its pipe
    assert done.returncode == 0
    assert done.stdout == "written, not flushed"
    assert "torn down" not in done.stderr


def test_an_error_keeps_its_exit_status_and_traceback() -> None:
    done = _run("raise OSError('the listener broke')")
    assert done.returncode == 1
    assert "OSError: the listener broke" in done.stderr


def test_the_fork_server_loads_it_first() -> None:
    for url in (None, "file:///tmp/repo", "s3://bucket/prefix"):
        forkserver.context(url)
        preload = mp_forkserver._forkserver._preload_modules  # type: ignore[attr-defined]
        assert preload[0] == "app.forkserver_process"  # its thresholds hold for the imports after it
        assert preload.count("app.forkserver_process") == 1
