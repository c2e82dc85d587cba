"""A command's peak RSS, measured so that the test process's own size does not leak into it.

Linux carries a process's peak RSS across exec: a command forked straight from pytest (a few hundred MB
after many tests) reports at least pytest's RSS from wait4, whatever its real peak, so a comparison of
two such figures could not fail. The command is therefore started by a small Python launcher, whose
child begins with the launcher's ~10 MB; the launcher reports that child's wait4 figure (the child's
peak, or a descendant's if larger)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

_LAUNCHER = (
    "import os, subprocess, sys\n"
    "proc = subprocess.Popen(sys.argv[2:])\n"
    "_pid, status, usage = os.wait4(proc.pid, 0)\n"
    "with open(sys.argv[1], 'w') as out:\n"
    "    out.write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def run_with_peak_rss(command: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[int, int, str]:
    """Run `command` (stdout discarded); its exit code, its peak RSS in KiB and its stderr."""
    with tempfile.TemporaryDirectory() as scratch, tempfile.TemporaryFile() as err:
        report = Path(scratch) / "maxrss"
        proc = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, str(report), *command],
            env=dict(env) if env is not None else None,
            stdout=subprocess.DEVNULL,
            stderr=err,
            check=False,
        )
        err.seek(0)
        peak = int(report.read_text()) if report.exists() else 0
        return proc.returncode, peak, err.read().decode(errors="replace")
