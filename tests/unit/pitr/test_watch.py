"""The recovered server's environment (docs/PITR.md section 4)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app.pitr.watch import server_env


def test_the_server_gets_what_restore_command_needs_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "BACKUP_STORAGE_URL"):
        monkeypatch.setenv(name, f"value-of-{name}")
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://catalog")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
    ctx: Any = SimpleNamespace(settings=SimpleNamespace(home=tmp_path), region=None)

    env = server_env(ctx, "db1")

    assert env["EQUISPLIT_DR_HOME"] == str(tmp_path) and env["EQUISPLIT_DR_SOURCE"] == "db1"
    assert env["BACKUP_STORAGE_URL"] == "value-of-BACKUP_STORAGE_URL"
    # restore_command reads a repository on S3 with the credentials boto3 finds in the environment
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        assert env[name] == f"value-of-{name}"
    assert "DATABASE_URL" not in env and "CELERY_BROKER_URL" not in env
