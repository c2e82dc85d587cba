"""`make test` takes care of the Debian packages the tests drive (a fresh machine failed the Flower test
until chromium was installed, and the README did not say so): run where they are missing and apt-get
cannot be used, it names them and the apt-get line, and stops before the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: What the Makefile's recipe itself needs: a shell and the commands it calls.
BASICS = ("sh", "id", "make", "cat", "cksum", "cut")


def _path_without_test_tools(tmp_path: Path) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in BASICS:
        found = shutil.which(name)
        assert found, name
        os.symlink(found, bin_dir / name)
    return str(bin_dir)


def test_make_test_names_the_missing_debian_packages(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": _path_without_test_tools(tmp_path)}
    proc = subprocess.run(
        ["make", "--no-print-directory", "test-deps"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "sudo apt-get install -y chromium redis-server e2fsprogs util-linux" in proc.stderr, proc.stderr
    plan = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "apt-get install" in plan.stdout, "make test does not run the test-deps step"
