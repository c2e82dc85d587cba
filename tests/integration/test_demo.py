"""The README's main command: the demo through the Celery job flow, with no server at all."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_the_cluster_flow_with_no_servers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "DATABASE_URL", "CELERY_"))}
    # A broker URL that nothing listens on: the demo must not need one.
    env.update(
        CELERY_BROKER_URL="redis://127.0.0.1:9/0",
        DATABASE_URL="postgresql://nobody@127.0.0.1:9/x",
        PYTHONPATH=str(ROOT),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "workers.demo", str(tmp_path / "demo")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "through the Celery job flow" in proc.stdout
    assert "unit(s)" in proc.stdout
    assert "the restored tree equals the source" in proc.stdout
    assert (tmp_path / "demo" / "catalog.sqlite3").exists()
