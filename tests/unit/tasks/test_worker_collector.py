"""A Celery worker's processes keep what they hold for their life out of the garbage collector's sight
(workers/base.py: tune_collector), as the CLI does (app/cli/entry.py): the main process before it forks
its pool, each pool child once its warm-up has opened the catalog and storage. Unfrozen, each full
collection re-scanned ~160,000 objects, 80-130 ms inside or right after a unit (docs/CLUSTER.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import gc, json
import workers, workers.base
from celery.signals import worker_init, worker_process_init
seen = {"imported": gc.get_freeze_count()}
worker_init.send(sender=None)
seen["main"] = gc.get_freeze_count()
worker_process_init.send(sender=None)
workers.base._warming.join()
seen["child"] = gc.get_freeze_count()
seen["threshold"] = gc.get_threshold()
print(json.dumps(seen))
"""


def test_worker_processes_freeze_their_long_lived_objects(tmp_path: Path) -> None:
    project = Path(__file__).resolve().parents[3]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "EQUISPLIT_DR_HOME": str(tmp_path / "home"),
        "PYTHONPATH": str(project),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["imported"] == 0  # importing the app freezes nothing by itself
    assert seen["main"] > 10_000  # the main process's imports, before the pool forks
    assert seen["child"] > seen["main"]  # and what the child's warm-up opened
    assert seen["threshold"] == [50_000, 20, 100]
