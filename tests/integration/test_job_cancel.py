"""`equisplit-dr job cancel` as users run it: an unknown job and a finished job each exit with their
documented code and a message, and cancel nothing (no `job.cancelled` in the audit trail)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from tests.support.trees import make_tree

EXE = [sys.executable, "-m", "app.cli.main"]
ROOT = Path(__file__).resolve().parents[2]


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXE, *args], env=env, capture_output=True, text=True, timeout=120)


def test_cancel_of_an_unknown_or_finished_job_cancels_nothing_and_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "DATABASE_URL", "EQUISPLIT"))}
    env.update(
        EQUISPLIT_DR_HOME=str(tmp_path / "home"),
        BACKUP_ENCRYPTION_KEY=secrets.token_hex(32),
        PYTHONPATH=str(ROOT),
        COLUMNS="200",
    )
    src = make_tree(tmp_path / "src", big_mib=0, small=3)
    for args in (("init",), ("source", "add", "docs", "--path", str(src)), ("backup", "run", "-s", "docs")):
        assert _run(env, *args).returncode == 0, args
    (job,) = json.loads(_run(env, "backup", "status", "--json").stdout)
    assert job["state"] == "succeeded"

    unknown = _run(env, "job", "cancel", "j-no-such-job")
    assert unknown.returncode == 9, (unknown.returncode, unknown.stderr)
    assert "no job 'j-no-such-job'" in unknown.stderr

    finished = _run(env, "job", "cancel", job["job_id"])
    assert finished.returncode == 17, (finished.returncode, finished.stdout, finished.stderr)
    assert "already finished (succeeded)" in finished.stderr and "nothing to cancel" in finished.stderr

    (after,) = json.loads(_run(env, "backup", "status", "--json").stdout)
    assert after["state"] == "succeeded"
    actions = [e["action"] for e in json.loads(_run(env, "backup", "logs", "--json").stdout)]
    assert "job.cancelled" not in actions, actions
