"""The README's `BackupSystem` snippet, saved as a script and run as written (no `if __name__ ==
"__main__":` guard), works when the backup uses worker processes: multiprocessing used to re-run the
script in every worker process, which started the backup again there and broke the pool."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

from tests.support.trees import assert_same_tree

ROOT = Path(__file__).resolve().parents[2]


def _snippet() -> str:
    readme = (ROOT / "README.md").read_text()
    (block,) = re.findall(r"From Python:\n\n```python\n(.*?)```", readme, re.S)
    assert "BackupSystem()" in block and "__main__" not in block, block
    return block


def test_readme_backup_system_snippet_runs_as_a_script_with_worker_processes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "contracts").mkdir(parents=True)
    for n in range(3):
        (src / "contracts" / f"c{n}.bin").write_bytes(os.urandom(1 << 20))
        (src / f"other{n}.bin").write_bytes(os.urandom(1 << 20))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "DATABASE_URL", "EQUISPLIT"))}
    env.update(
        EQUISPLIT_DR_HOME=str(tmp_path / "home"),
        BACKUP_ENCRYPTION_KEY=secrets.token_hex(32),
        PYTHONPATH=str(ROOT),
        # worker processes even for this small tree: two processes, units of 1 MiB, no size threshold
        BACKUP_PROCESSES="2",
        BACKUP_PROCESSES_MIN_BYTES="0",
        BACKUP_UNIT_BYTES=str(1 << 20),
    )
    cli = [sys.executable, "-m", "app.cli.main"]
    for args in (["init"], ["source", "add", "docs", "--path", str(src)]):
        assert subprocess.run([*cli, *args], env=env, capture_output=True, timeout=120).returncode == 0
    target = tmp_path / "restore"
    script = tmp_path / "snippet.py"
    script.write_text(_snippet().replace('"/tmp/restore"', repr(str(target))))
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    first, listing = proc.stdout.splitlines()  # printed once each: the script ran once
    assert re.fullmatch(r"\S+ 0 \d+", first), first
    assert listing.startswith("[{") and "'type': 'incremental'" in listing
    assert_same_tree(src / "contracts", target / "contracts")
