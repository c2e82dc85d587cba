"""Verification and drills through real workers (Redis broker, PostgreSQL catalog): a clean repository
verifies and drills clean; damage found by the verify task reaches Sentry (loopback) and turns health
critical; a drill task records its RTO."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster
from tests.support.sentry_server import SentryServer, sentry_server  # noqa: F401  (fixture)
from tests.support.trees import make_tree

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _message(event: dict[str, Any]) -> str:
    logentry = event.get("logentry") or {}
    return str(logentry.get("formatted") or logentry.get("message") or event.get("message") or "")


def test_verify_and_drill_tasks_on_a_worker_and_damage_reaches_sentry(
    cluster: Cluster,
    sentry_server: SentryServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    from app.scheduler import BackupScheduler
    from app.system import BackupSystem
    from tasks.verify import drills, scheduled_verification, verify

    cluster.start_worker("verifier", "verify", extra_env={"SENTRY_DSN": sentry_server.dsn})
    with BackupSystem() as system:
        system.add_source("docs", make_tree(tmp_path / "src", big_mib=2, small=5))
        backup = system.create_full_backup("docs")
    clean = scheduled_verification.delay("incremental").get(timeout=120)
    assert clean["outcome"] == "passed" and clean["packs_read"] == clean["packs_checked"] > 0  # all new
    [drill] = drills.delay("docs").get(timeout=120)
    assert drill["outcome"] == "passed" and drill["rto_seconds"] > 0 and drill["backup"] == backup.id

    pack = max((tmp_path / "repo" / "packs").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    data = bytearray(pack.read_bytes())
    data[64] ^= 0x01
    pack.write_bytes(bytes(data))
    damaged = verify.delay(source="docs", data="all").get(timeout=120)
    assert damaged["outcome"] == "damaged" and damaged["damaged_packs"] == [pack.name]
    assert [b["backup"] for b in damaged["backups"]] == [backup.id]
    event = sentry_server.wait_for(lambda e: "found damage" in _message(e), timeout=30)
    assert event.get("level") == "error" and pack.name in _message(event)
    with BackupScheduler() as scheduler:
        health = scheduler.get_health_status()
    assert health.status == "critical" and any(backup.id in i.message for i in health.issues)
