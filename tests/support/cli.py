"""The `equisplit-dr` command as a user runs it: a subprocess with a fresh home and key, and nothing of
the test process's own settings."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXE = [sys.executable, "-m", "app.cli.main"]


def cli_env_for(home: Path, **settings: object) -> dict[str, str]:
    """A user's environment: EQUISPLIT_DR_HOME, a fresh master key, and `settings` as variables."""
    own = ("BACKUP_", "DATABASE_URL", "EQUISPLIT", "CELERY")  # embedded defaults: no broker either
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    env.update(
        EQUISPLIT_DR_HOME=str(home),
        BACKUP_ENCRYPTION_KEY=secrets.token_hex(32),
        PYTHONPATH=str(ROOT),
        COLUMNS="200",
        **{k.upper(): str(v) for k, v in settings.items()},
    )
    return env


def run_cli(env: dict[str, str], *args: str, ok: bool | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command; with `ok=True` a non-zero exit fails the test with its output."""
    proc = subprocess.run([*EXE, *args], env=env, capture_output=True, text=True, timeout=120)
    if ok:
        assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc
