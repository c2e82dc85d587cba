"""SENTRY_DSN turns on sentry-sdk (Celery integration) in workers: a task that fails for good reaches
Sentry (here a loopback server receiving the real SDK's envelopes) with our tags and no secrets."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster
from tests.support.sentry_server import SentryServer, sentry_server  # noqa: F401  (fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL", re.IGNORECASE)


def _exception(event: dict[str, Any]) -> dict[str, Any]:
    values = (event.get("exception") or {}).get("values") or [{}]
    return dict(values[-1])


ANY_EXCEPTION = ""


def _task_event(server: SentryServer, task: str, exc_type: str) -> dict[str, Any]:
    """The event of a failure of `task` with exception `exc_type` (any type if empty)."""
    return server.wait_for(
        lambda e: (
            (not exc_type or _exception(e).get("type") == exc_type)
            and (
                e.get("extra", {}).get("celery-job", {}).get("task_name") == task
                or (e.get("tags") or {}).get("task") == task
            )
        ),
        timeout=30,
    )


def _leaked(haystack: str, secrets: dict[str, str | bytes | int]) -> list[str]:
    """The names of the secrets found in `haystack` (as text, hex or bytes repr); never their values,
    so a failing assertion does not print them."""
    found = []
    for name, value in secrets.items():
        if isinstance(value, bytes):
            forms = [value.hex(), value.hex().upper(), repr(value)[2:-1]]
        else:
            forms = [str(value)]
        if any(form in haystack for form in forms):
            found.append(name)
    return found


def _assert_no_secrets(server: SentryServer, cluster: Cluster, **more: str | bytes | int) -> None:
    key = cluster.env["BACKUP_ENCRYPTION_KEY"]
    secrets: dict[str, str | bytes | int] = {"master key": bytes.fromhex(key), **more}
    secrets.update(
        {
            name: value
            for name, value in cluster.env.items()
            if SECRET_NAME.search(name) and len(value) >= 8 and name != "BACKUP_ENCRYPTION_KEY"
        }
    )
    leaked = _leaked(server.haystack(), secrets)
    if leaked:
        raise SecretLeaked(f"these reached Sentry: {leaked}")


class SecretLeaked(AssertionError):
    """A secret reached the loopback Sentry server."""


@pytest.fixture
def sentry_worker(cluster: Cluster, sentry_server: SentryServer) -> SentryServer:  # noqa: F811
    cluster.start_worker("w1", extra_env={"SENTRY_DSN": sentry_server.dsn})
    return sentry_server


def test_failed_tasks_reach_sentry_with_our_tags_and_no_secrets(
    cluster: Cluster, sentry_worker: SentryServer
) -> None:
    """The Celery integration reports a task that failed for good; workers/base.py `_tag_sentry` adds task,
    queue and source/backup tags, and no tag of one task shows on the next task's event (the same pool
    child runs both)."""
    from tasks.backup import finalize_backup, run_backup

    with pytest.raises(Exception, match="no-such-source"):
        run_backup.delay("no-such-source", "full").get(timeout=60)
    with pytest.raises(Exception, match="b-missing"):
        finalize_backup.delay("b-missing").get(timeout=60)
    first = _task_event(sentry_worker, "tasks.backup.run_backup", "SourceError")
    second = _task_event(sentry_worker, "tasks.backup.finalize_backup", "BackupFailedError")
    exc = _exception(first)
    assert "no-such-source" in exc.get("value", ""), exc
    assert exc.get("mechanism", {}).get("type") == "celery", exc
    assert first.get("level") == "error", first.get("level")
    assert first["extra"]["celery-job"]["task_name"] == "tasks.backup.run_backup"
    assert first["extra"]["celery-job"]["args"] == "[Filtered]", "send_default_pii is off: no task args"
    tags = first.get("tags") or {}
    assert tags.get("task") == "tasks.backup.run_backup", tags
    assert tags.get("queue") == "backup", tags
    assert tags.get("source") == "no-such-source", tags
    tags = second.get("tags") or {}
    assert tags.get("task") == "tasks.backup.finalize_backup", tags
    assert tags.get("queue") == "backup", tags
    assert tags.get("backup") == "b-missing", tags
    assert "source" not in tags, f"a tag of an earlier task leaked: {tags}"
    _assert_no_secrets(sentry_worker, cluster)


def test_key_material_in_frame_locals_stays_out_of_sentry(
    cluster: Cluster, sentry_worker: SentryServer, tmp_path: Path
) -> None:
    """A failure inside Repository.open (a damaged config object) has the keyring in its frames' locals."""
    from app.system import BackupSystem
    from tasks.backup import run_backup

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    with BackupSystem() as system:
        system.add_source("docs", tmp_path / "src")
        keyring = system.context.repository.keyring
        id_key, chunker_seed = keyring.id_key, keyring.chunker_seed
    config = tmp_path / "repo" / "config" / "config"
    damaged = bytearray(config.read_bytes())
    damaged[-1] ^= 0xFF  # the AEAD tag: the header still reads as a config object
    config.write_bytes(bytes(damaged))
    # The local metadata cache (app/repo/cache.py) holds the good copy read above: without it, the
    # worker reads the damaged one from storage.
    shutil.rmtree(tmp_path / "home" / "cache", ignore_errors=True)

    with pytest.raises(Exception, match="config"):
        run_backup.delay("docs", "full").get(timeout=60)
    event = _task_event(sentry_worker, "tasks.backup.run_backup", ANY_EXCEPTION)
    frames = _exception(event).get("stacktrace", {}).get("frames", [])
    assert any(f.get("function") == "open" and f.get("module") == "app.repo.repository" for f in frames), (
        frames
    )
    _assert_no_secrets(sentry_worker, cluster, **{"keyring id key": id_key, "chunker seed": chunker_seed})
