"""The beat health task on a real worker (Redis broker, PostgreSQL catalog): a stale backup opens one
incident whose messages reach the loopback SMTP, Slack and Sentry servers once; running the task again
sends nothing new; the next backup resolves it. The task's result names no secret."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from tests.support.alert_servers import PAGERDUTY_KEY, SLACK_PATH, HookServer, SmtpServer, alert_env
from tests.support.cluster import Cluster
from tests.support.sentry_server import SentryServer
from tests.support.trees import make_tree

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_the_health_task_alerts_once_and_resolves(
    cluster: Cluster,
    smtp_server: SmtpServer,
    hook_server: HookServer,
    sentry_server: SentryServer,
    tmp_path: Path,
) -> None:
    from app import clock
    from app.catalog.db import transaction
    from app.catalog.models import Backup
    from app.system import BackupSystem
    from tasks.monitor import health_check

    env = alert_env(smtp_server, hook_server, sentry_server.dsn)
    env["BACKUP_STORAGE_QUOTA_BYTES"] = str(1 << 40)
    env["BACKUP_CROSS_REGION"] = "false"  # no replication lag: this test is about the stale backup
    cluster.start_worker("monitor", "monitor", extra_env=env)
    key = "stale_backup:docs"
    with BackupSystem() as system:
        system.add_source("docs", make_tree(tmp_path / "src", big_mib=0, small=3))
        system.create_full_backup("docs")
        when = clock.now() - timedelta(hours=9)
        with transaction(system.context.sessions) as session:
            session.execute(update(Backup).values(started_at=when, finished_at=when))

    first = health_check.delay().get(timeout=120)
    assert first["status"] == "warning" and key in first["opened"], first
    assert {s["channel"] for s in first["sent"] if s["key"] == key and s["ok"]} == {
        "email",
        "slack",
        "sentry",
    }
    again = health_check.delay().get(timeout=120)
    assert again["opened"] == [] and not [s for s in again["sent"] if s["key"] == key]
    mails = [m for m in smtp_server.mails.snapshot() if m["message"]["X-Equisplit-Incident"] == key]
    assert len(mails) == 1 and "WARNING stale_backup (docs)" in mails[0]["message"]["Subject"]
    assert len([b for b in hook_server.slack.snapshot() if f"incident {key}" in b["text"]]) == 1
    sentry_server.wait_for(lambda e: (e.get("tags") or {}).get("alert.key") == key)
    assert not hook_server.pagerduty.snapshot()  # a warning: no page

    with BackupSystem() as system:
        system.create_incremental_backup("docs")
    resolved = health_check.delay().get(timeout=120)
    assert key in resolved["resolved"]
    assert {s["channel"] for s in resolved["sent"] if s["key"] == key and s["ok"]} == {
        "email",
        "slack",
        "sentry",
    }
    text = repr([first, again, resolved])
    for secret in (SLACK_PATH, PAGERDUTY_KEY, "publickey"):
        assert secret not in text
