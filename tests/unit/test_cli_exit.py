"""The console script ends without the interpreter's tear-down (app/cli/entry.py: exit_now), and
exits as `sys.exit` would: same status, atexit handlers run, output flushed, other threads waited for."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import atexit, sys, threading, time
from app.cli.entry import exit_now

class TornDown:
    def __del__(self):
        sys.stderr.write("torn down\\n")

kept = TornDown()
atexit.register(lambda: sys.stderr.write("atexit ran\\n"))
sys.stdout.write("written, not flushed")
{before}
exit_now({code})
"""


def _run(code: str, before: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.format(code=code, before=before)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_keeps_the_status_runs_atexit_and_flushes_without_tearing_down() -> None:
    for code, status in (("None", 0), ("0", 0), ("16", 16), ("2", 2)):
        done = _run(code)
        assert done.returncode == status
        assert done.stdout == "written, not flushed"
        assert "atexit ran" in done.stderr
        assert "torn down" not in done.stderr


def test_a_message_goes_to_stderr_with_status_1_as_sys_exit() -> None:
    done = _run("'the catalog is locked'")
    assert done.returncode == 1
    assert "the catalog is locked" in done.stderr


def test_another_running_thread_is_waited_for_as_by_a_normal_exit() -> None:
    before = (
        "worker = threading.Thread(target=lambda: (time.sleep(0.5), sys.stdout.write(' and the thread')))\n"
        "worker.start()"
    )
    done = _run("3", before)
    assert done.returncode == 3
    assert done.stdout == "written, not flushed and the thread"
