"""The peak RSS the memory tests compare is the command's own, not the test process's."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.peakrss import run_with_peak_rss


def test_a_small_command_started_by_a_large_process_reports_its_own_peak() -> None:
    ballast = bytearray(300 << 20)
    ballast[:: 4096] = b"\x01" * len(range(0, len(ballast), 4096))  # every page touched: 300 MB resident
    code, peak_kib, _ = run_with_peak_rss([sys.executable, "-c", "pass"])
    assert code == 0
    assert peak_kib < 100 << 10, f"{peak_kib // 1024} MB: the test process's own RSS leaked into the figure"
    # Forked straight from this process, wait4 reports at least this process's RSS: why the launcher.
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert usage.ru_maxrss >= 300 << 10
    del ballast


def test_the_command_s_exit_code_and_stderr_come_back_and_a_larger_peak_is_seen() -> None:
    code, peak_kib, err = run_with_peak_rss(
        [sys.executable, "-c", "import sys; b = bytearray(200 << 20); b[::4096] = b'1' * len(b[::4096]); "
         "sys.exit('done')"]
    )
    assert code == 1 and "done" in err
    assert peak_kib > 200 << 10
