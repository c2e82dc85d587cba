"""Configuration changes made through the environment are audited (docs/AUDIT.md section 6): a CLI run
whose settings differ from the last recorded ones appends one `config.changed` naming each changed
variable; a secret is named, its value never written to the catalog or printed."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from app.catalog.db import make_engine
from app.catalog.models import AuditEntry
from tests.support.cli import cli_env_for, run_cli

PG_DUMP = "/usr/lib/postgresql/15/bin/pg_dump"


def _config_rows(url: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(AuditEntry.action, AuditEntry.object, AuditEntry.detail)
                .where(AuditEntry.action.like("config.%"))
                .order_by(AuditEntry.id)
            )
            return [(a, o, d) for a, o, d in rows]
    finally:
        engine.dispose()


def _dump(url: str) -> str:
    plain = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return subprocess.run([PG_DUMP, "--data-only", plain], capture_output=True, text=True, check=True).stdout


@pytest.mark.postgres
def test_a_changed_setting_is_recorded_once_and_a_secret_never_by_value(
    tmp_path: Path, fresh_pg_url: str
) -> None:
    # A DSN with a password (trust authentication ignores it), a webhook and a key: all secrets.
    db_password = f"pw-{secrets.token_hex(8)}"
    url = sa.make_url(fresh_pg_url).set(password=db_password).render_as_string(hide_password=False)
    webhook = f"https://hooks.slack.invalid/services/T0/B0/{secrets.token_hex(12)}"
    env = cli_env_for(tmp_path / "home", database_url=url, dr_slack_webhook=webhook)
    outputs: list[str] = []

    def run(*args: str) -> None:
        proc = run_cli(env, *args, ok=True)
        outputs.append(proc.stdout + proc.stderr)

    run("init")
    run("backup", "list")
    rows = _config_rows(url)
    assert [(a, o) for a, o, _ in rows] == [("config.recorded", "cli")]
    settings = rows[0][2]["settings"]
    assert settings["BACKUP_RETENTION_DAILY"] == "30"
    assert settings["DR_SLACK_WEBHOOK"].startswith("scrypt:")
    assert settings["DATABASE_URL"].startswith("scrypt:")

    env["BACKUP_RETENTION_DAILY"] = "7"
    run("backup", "list")
    run("backup", "list")  # the same again: nothing new
    rows = _config_rows(url)
    assert [a for a, _, _ in rows] == ["config.recorded", "config.changed"]
    assert rows[1][2]["changed"] == {"BACKUP_RETENTION_DAILY": {"old": "30", "new": "7"}}

    old_key, new_key = env["BACKUP_ENCRYPTION_KEY"], secrets.token_hex(32)
    new_webhook = webhook.replace("/B0/", "/B1/")
    smtp_password = f"smtp-{secrets.token_hex(8)}"
    env.update(BACKUP_ENCRYPTION_KEY=new_key, DR_SLACK_WEBHOOK=new_webhook, SMTP_PASSWORD=smtp_password)
    run("backup", "list")
    rows = _config_rows(url)
    assert [a for a, _, _ in rows] == ["config.recorded", "config.changed", "config.changed"]
    assert rows[2][2]["changed"] == {
        "BACKUP_ENCRYPTION_KEY": "changed",
        "DR_SLACK_WEBHOOK": "changed",
        "SMTP_PASSWORD": "set",
    }

    dump = _dump(url)
    assert "config.changed" in dump and "BACKUP_RETENTION_DAILY" in dump
    for secret in (db_password, webhook, new_webhook, old_key, new_key, smtp_password, webhook.rsplit("/", 1)[1]):
        assert secret not in dump
        assert not any(secret in out for out in outputs)


def test_the_embedded_catalog_records_the_configuration_without_secrets(tmp_path: Path) -> None:
    env = cli_env_for(tmp_path / "home")
    assert run_cli(env, "init").returncode == 0
    env["BACKUP_COMPRESSION_LEVEL"] = "9"
    proc = run_cli(env, "backup", "list", ok=True)
    catalog = tmp_path / "home" / "catalog.sqlite3"
    engine = make_engine(f"sqlite:///{catalog}")
    try:
        with engine.connect() as conn:
            changed = conn.scalar(
                select(AuditEntry.detail).where(AuditEntry.action == "config.changed").order_by(AuditEntry.id)
            )
    finally:
        engine.dispose()
    assert changed is not None and changed["changed"] == {"BACKUP_COMPRESSION_LEVEL": {"old": "3", "new": "9"}}
    key = env["BACKUP_ENCRYPTION_KEY"]
    assert key.encode() not in b"".join(p.read_bytes() for p in catalog.parent.glob("catalog.sqlite3*"))
    assert key not in proc.stdout + proc.stderr


def test_recording_the_configuration_on_a_first_use_under_the_write_lock_does_not_deadlock(
    tmp_path: Path,
) -> None:
    """Many writers open the catalog first as `with ctx.catalog_write_lock, transaction(ctx.sessions)`:
    the recording runs inside that (`hold add` hung on it, seen failing before the fix)."""
    import threading

    from app.catalog.db import transaction
    from app.context import Context
    from app.system import BackupSystem
    from tests.support.system import settings_for

    settings = settings_for(tmp_path / "home")
    with BackupSystem(settings) as system:
        system.init()
    ctx = Context(settings)
    ctx.process = "cli"
    done = threading.Event()

    def first_use() -> None:
        with ctx.catalog_write_lock, transaction(ctx.sessions):
            done.set()

    thread = threading.Thread(target=first_use, daemon=True)
    thread.start()
    thread.join(30)
    ctx.close()
    assert done.is_set(), "the first catalog use under the write lock deadlocked"
