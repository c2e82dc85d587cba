"""Alerts (docs/MONITORING.md) produced for real and received by loopback servers: a failed backup, a
stale one, a verification failure, a filled storage quota and an RPO breach each reach their channels
(Sentry, SMTP, Slack, PagerDuty) once, escalate once where the table says so, and resolve once when the
condition clears. `monitoring test-alerts` reaches every channel and shows no secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from app import clock
from app.alerts.incidents import evaluate_alerts
from app.catalog import chunks as chunk_index
from app.catalog import wal as catalog_wal
from app.catalog.db import transaction
from app.catalog.models import Backup, Incident, Source, WalArchive
from app.errors import EquisplitError
from app.monitoring.health import CheckResult, get_health_status
from app.repo.format import Kind
from app.storage.faulty import FaultyStorage
from app.system import BackupSystem
from tests.support.alert_servers import (
    PAGERDUTY_KEY,
    SLACK_PATH,
    HookServer,
    SmtpServer,
    alert_env,
    alert_settings,
)
from tests.support.sentry_server import SentryServer
from tests.support.system import Factory
from tests.support.trees import make_tree

ROOT = Path(__file__).resolve().parents[2]
BIG_QUOTA = 1 << 40  # storage utilisation stays out of the way unless a test fills a quota


class Channels:
    """What each loopback channel received about one incident key, as a Counter of actions."""

    def __init__(self, smtp: SmtpServer, hooks: HookServer, sentry: SentryServer) -> None:
        self.smtp, self.hooks, self.sentry = smtp, hooks, sentry

    def heard(self, key: str) -> dict[str, Counter[str]]:
        mails = Counter(
            _action(m["message"]["Subject"])
            for m in self.smtp.mails.snapshot()
            if m["message"]["X-Equisplit-Incident"] == key
        )
        slack = Counter(
            _action(b["text"]) for b in self.hooks.slack.snapshot() if f"incident {key}" in b["text"]
        )
        pagerduty = Counter(
            (
                b["event_action"]
                if b["event_action"] == "resolve"
                else b["payload"]["custom_details"]["action"]
            )
            for b in self.hooks.pagerduty.snapshot()
            if b["dedup_key"] == f"equisplit-dr:{key}"
        )
        events = []
        with self.sentry._lock:
            events = list(self.sentry.events)
        sentry = Counter(
            _tags(e).get("alert.action", "?") for e in events if _tags(e).get("alert.key") == key
        )
        return {"email": mails, "slack": slack, "pagerduty": pagerduty, "sentry": sentry}


def _tags(event: dict[str, Any]) -> dict[str, str]:
    tags = event.get("tags") or {}
    return dict(tags) if isinstance(tags, dict) else {k: v for k, v in tags}


def _action(text: str) -> str:
    for word, action in (("escalated:", "escalate"), ("resolved:", "resolve"), ("test:", "test")):
        if word in text:
            return action
    return "open"


def _counts(**actions: int) -> Counter[str]:
    return Counter({k: v for k, v in actions.items() if v})


@pytest.fixture
def alerting(
    make_system: Factory, smtp_server: SmtpServer, hook_server: HookServer, sentry_server: SentryServer
) -> tuple[Factory, Channels, dict[str, Any]]:
    settings = alert_settings(smtp_server, hook_server, sentry_server.dsn)

    def factory(**kwargs: Any) -> BackupSystem:
        kwargs.setdefault("backup_storage_quota_bytes", BIG_QUOTA)
        kwargs.setdefault("backup_cross_region", False)  # no replication lag unless a test asks for one
        return make_system(**settings, **kwargs)

    return factory, Channels(smtp_server, hook_server, sentry_server), settings


def _age_backups(system: BackupSystem, hours: float) -> None:
    when = clock.now() - timedelta(hours=hours)
    with transaction(system.context.sessions) as session:
        session.execute(update(Backup).values(started_at=when, finished_at=when))


def test_a_failed_backup_alerts_once_escalates_after_three_and_resolves_after_a_success(
    alerting: tuple[Factory, Channels, dict[str, Any]], tmp_path: Path
) -> None:
    factory, channels, _ = alerting
    system = factory()
    src = make_tree(tmp_path / "src", big_mib=0, small=5)
    system.add_source("docs", src)
    system.create_full_backup("docs")
    key = "backup_failed:docs"
    real = system.context.repository.storage
    faulty = FaultyStorage(real, lambda verb, _n: verb == "put")

    def fail_once(n: int) -> None:
        (src / f"new-{n}.txt").write_bytes(os.urandom(2048))
        system.context.repository.storage = faulty
        system.context.__dict__["storage"] = faulty
        with pytest.raises(EquisplitError):
            system.create_incremental_backup("docs")
        system.context.repository.storage = real
        system.context.__dict__["storage"] = real

    fail_once(1)
    health = get_health_status(system.context)
    assert health.status == "warning" and key in {i.key for i in health.issues}
    report = evaluate_alerts(system.context)
    assert report.opened == [key]
    evaluate_alerts(system.context)  # still failing: no second message
    heard = channels.heard(key)
    assert heard == {
        "email": _counts(open=1),
        "slack": _counts(),
        "pagerduty": _counts(),
        "sentry": _counts(open=1),
    }

    fail_once(2)
    assert evaluate_alerts(system.context).escalated == []
    fail_once(3)  # the third failure in a row escalates, to PagerDuty too
    report = evaluate_alerts(system.context)
    assert report.escalated == [key] and all(s["ok"] for s in report.sent)
    evaluate_alerts(system.context)
    heard = channels.heard(key)
    assert heard["pagerduty"] == _counts(escalate=1) and heard["slack"] == _counts(escalate=1)
    assert heard["email"] == _counts(open=1, escalate=1) and heard["sentry"] == _counts(open=1, escalate=1)

    system.create_incremental_backup("docs")  # a success clears the condition
    assert evaluate_alerts(system.context).resolved == [key]
    evaluate_alerts(system.context)
    heard = channels.heard(key)
    for name in ("email", "slack", "pagerduty", "sentry"):
        assert heard[name]["resolve"] == 1, (name, heard)
    with system.context.sessions() as session:
        row = session.scalar(select(Incident).where(Incident.key == key))
        assert row is not None and row.resolved_at is not None and row.escalated_at is not None
        assert row.pending == []


def test_a_stale_backup_warns_then_turns_critical_and_resolves_with_the_next_backup(
    alerting: tuple[Factory, Channels, dict[str, Any]], tmp_path: Path
) -> None:
    factory, channels, _ = alerting
    system = factory()
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=0, small=3))
    system.create_full_backup("docs")
    key = "stale_backup:docs"
    assert key not in {i.key for i in get_health_status(system.context).issues}
    _age_backups(system, 9)
    assert evaluate_alerts(system.context).opened == [key]
    evaluate_alerts(system.context)
    assert channels.heard(key) == {
        "email": _counts(open=1),
        "slack": _counts(open=1),
        "pagerduty": _counts(),
        "sentry": _counts(open=1),
    }
    _age_backups(system, 13)
    assert evaluate_alerts(system.context).escalated == [key]
    evaluate_alerts(system.context)
    assert channels.heard(key)["pagerduty"] == _counts(escalate=1)
    system.create_incremental_backup("docs")
    assert evaluate_alerts(system.context).resolved == [key]
    evaluate_alerts(system.context)
    assert {name: c["resolve"] for name, c in channels.heard(key).items()} == dict.fromkeys(
        ("email", "slack", "pagerduty", "sentry"), 1
    )


def test_a_verification_failure_alerts_every_channel_at_once_and_resolves_when_healed(
    alerting: tuple[Factory, Channels, dict[str, Any]], tmp_path: Path
) -> None:
    factory, channels, _ = alerting
    system = factory()
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=1, small=3))
    backup = system.create_full_backup("docs").id
    storage = system.context.storage
    entries = system.context.repository.read_manifest(backup)["entries"]
    chunk = next(e for e in entries if e["path"] == "bin/blob.bin")["chunks"][0]
    with system.context.sessions() as session:
        where = chunk_index.locate(session, [chunk])[chunk]
    data = bytearray(storage.get(Kind.PACKS, where.pack_id))
    data[where.offset + where.length // 2] ^= 0x01  # inside one chunk of one file
    storage.put(Kind.PACKS, where.pack_id, bytes(data))
    assert system.verify_backup(data="all").outcome == "damaged"
    key = f"verification_failed:{backup}"
    opened = evaluate_alerts(system.context).opened  # the only backup is damaged: none is restorable
    assert sorted(opened) == sorted([key, "no_backup:docs"])
    evaluate_alerts(system.context)
    assert channels.heard(key) == dict.fromkeys(("email", "slack", "pagerduty", "sentry"), _counts(open=1))
    # a full backup stores the damaged content again; verification heals the backup
    system.create_full_backup("docs")
    assert system.verify_backup(data="all").outcome == "passed"
    assert key in evaluate_alerts(system.context).resolved
    evaluate_alerts(system.context)
    assert channels.heard(key) == dict.fromkeys(
        ("email", "slack", "pagerduty", "sentry"), _counts(open=1, resolve=1)
    )


def test_a_filled_storage_quota_is_critical_everywhere_and_resolves_when_raised(
    alerting: tuple[Factory, Channels, dict[str, Any]], tmp_path: Path
) -> None:
    factory, channels, _ = alerting
    key_hex = "ab" * 32
    small = factory(key=key_hex, backup_storage_quota_bytes=256 << 10)
    small.add_source("docs", make_tree(tmp_path / "src", big_mib=1, small=3))
    assert not [i for i in get_health_status(small.context).issues if i.condition == "storage_utilisation"]
    small.create_full_backup("docs")  # about 1 MiB of random data: past the 256 KiB quota
    key = "storage_utilisation:primary"
    health = get_health_status(small.context)
    issue = next(i for i in health.issues if i.key == key)
    assert issue.severity == "critical" and "BACKUP_STORAGE_QUOTA_BYTES" in issue.message
    assert evaluate_alerts(small.context).opened == [key]
    evaluate_alerts(small.context)
    assert channels.heard(key) == dict.fromkeys(("email", "slack", "pagerduty", "sentry"), _counts(open=1))
    raised = factory(key=key_hex, backup_storage_quota_bytes=BIG_QUOTA, init=False)
    assert evaluate_alerts(raised.context).resolved == [key]
    assert channels.heard(key)["pagerduty"] == _counts(open=1, resolve=1)


def test_an_rpo_breach_is_critical_and_resolves_when_wal_arrives(
    alerting: tuple[Factory, Channels, dict[str, Any]],
) -> None:
    factory, channels, _ = alerting
    system = factory(max_data_loss_seconds=600)
    system.add_postgres_source("orders", "postgresql://app@127.0.0.1:5432/orders")
    key = "rpo_breach:orders"
    with transaction(system.context.sessions) as session:
        source = session.scalar(select(Source).where(Source.name == "orders"))
        assert source is not None
        session.add(
            WalArchive(
                source_id=source.id,
                newest_segment="000000010000000000000007",
                newest_record_at=clock.now() - timedelta(seconds=1800),
                last_archived_at=clock.now() - timedelta(seconds=1800),
            )
        )
    issue = next(i for i in get_health_status(system.context).issues if i.key == key)
    assert issue.severity == "critical" and "MAX_DATA_LOSS_SECONDS" in issue.message
    assert key in evaluate_alerts(system.context).opened
    evaluate_alerts(system.context)
    assert channels.heard(key) == dict.fromkeys(("email", "slack", "pagerduty", "sentry"), _counts(open=1))
    with transaction(system.context.sessions) as session:  # a segment archived just now
        archive = catalog_wal.get_archive(session, source.id)
        assert archive is not None
        archive.newest_record_at = clock.now()
    assert key in evaluate_alerts(system.context).resolved
    assert channels.heard(key)["pagerduty"] == _counts(open=1, resolve=1)


def test_a_check_past_the_timeout_is_an_issue_and_keeps_its_incidents_open(system: BackupSystem) -> None:
    import threading

    release = threading.Event()

    def slow(*_: Any) -> CheckResult:
        release.wait(30)
        return CheckResult()

    system.context.settings.health_check_timeout = 1
    try:
        health = get_health_status(system.context, {"backups": slow})
    finally:
        release.set()
    assert health.status == "warning"
    assert [i.key for i in health.issues] == ["check_failed:backups"]
    assert "HEALTH_CHECK_TIMEOUT" in health.issues[0].message
    assert {"stale_backup", "backup_failed", "no_backup"} <= health.unknown_conditions


def test_test_alerts_reaches_every_channel_and_shows_no_secret(
    smtp_server: SmtpServer, hook_server: HookServer, sentry_server: SentryServer, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "EQUISPLIT_DR_HOME": str(tmp_path / "home"),
        **alert_env(smtp_server, hook_server, sentry_server.dsn),
    }
    run = subprocess.run(
        [sys.executable, "-m", "app.cli.main", "monitoring", "test-alerts", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert {r["channel"]: r["ok"] for r in json.loads(run.stdout)} == dict.fromkeys(
        ("sentry", "email", "slack", "pagerduty"), True
    )
    mail = smtp_server.mails.snapshot()
    assert len(mail) == 1 and sorted(mail[0]["to"]) == ["admin@example.test", "ops@example.test"]
    assert "test:" in mail[0]["message"]["Subject"]
    assert len(hook_server.slack.snapshot()) == 1
    (event,) = hook_server.pagerduty.snapshot()
    assert event["routing_key"] == PAGERDUTY_KEY and event["event_action"] == "trigger"
    sentry_server.wait_for(lambda e: _tags(e).get("alert.action") == "test")

    hook_server.status = 500  # a failing channel: exit 1, named, its URL and key never shown
    failed = subprocess.run(
        [sys.executable, "-m", "app.cli.main", "monitoring", "test-alerts"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1
    assert "slack" in failed.stderr and "HTTP 500" in failed.stderr
    for secret in (SLACK_PATH, PAGERDUTY_KEY, "slack-secret-token"):
        assert secret not in failed.stdout + failed.stderr


def test_a_stopped_replication_target_alerts_and_resolves_when_it_catches_up(
    alerting: tuple[Factory, Channels, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.replication.run import replicate
    from app.replication.status import replication_status

    factory, channels, _ = alerting
    system = factory(backup_cross_region=True, secondary_regions=["us-west-2"])
    region = system.settings.home / "regions" / "us-west-2"
    region.parent.mkdir(parents=True, exist_ok=True)
    region.write_bytes(b"")  # the region's storage is gone: a file where its directory should be
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=0, small=3))
    system.create_full_backup("docs")
    [run] = replicate(system.context)
    assert run.copied == 0
    [status] = replication_status(system.context)
    assert status.oldest_waiting is not None
    key = "replication_lag:us-west-2"
    real_now = clock.now
    later = status.oldest_waiting + timedelta(seconds=status.lag_target_seconds + 60)
    monkeypatch.setattr(clock, "now", lambda: later)
    issue = next(i for i in get_health_status(system.context).issues if i.key == key)
    assert issue.severity == "warning" and "us-west-2" in issue.message
    assert key in evaluate_alerts(system.context).opened
    evaluate_alerts(system.context)
    assert channels.heard(key) == {
        "email": _counts(open=1),
        "slack": _counts(open=1),
        "pagerduty": _counts(),
        "sentry": _counts(open=1),
    }
    monkeypatch.setattr(clock, "now", real_now)
    region.unlink()  # the target is back: the next pass catches up
    [caught_up] = replicate(system.context)
    assert caught_up.copied > 0 and caught_up.failed == 0
    assert key in evaluate_alerts(system.context).resolved
    assert {name: c["resolve"] for name, c in channels.heard(key).items()} == {
        "email": 1,
        "slack": 1,
        "pagerduty": 0,
        "sentry": 1,
    }


def test_monitoring_alerts_evaluate_from_the_cli_lists_the_incident(
    smtp_server: SmtpServer, hook_server: HookServer, sentry_server: SentryServer, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "EQUISPLIT_DR_HOME": str(tmp_path / "home"),
        "BACKUP_ENCRYPTION_KEY": "cd" * 32,
        "BACKUP_STORAGE_QUOTA_BYTES": str(BIG_QUOTA),
        "BACKUP_CROSS_REGION": "false",
        **alert_env(smtp_server, hook_server, sentry_server.dsn),
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli.main", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert cli("init").returncode == 0
    assert (
        cli(
            "source", "add", "docs", "--path", str(make_tree(tmp_path / "src", big_mib=0, small=2))
        ).returncode
        == 0
    )
    run = cli("monitoring", "alerts", "--evaluate", "--json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["evaluation"]["opened"] == ["no_backup:docs"]
    [incident] = doc["incidents"]
    assert incident["key"] == "no_backup:docs" and incident["pending"] == []
    assert incident["notified"] == ["email", "sentry", "slack"]
    health = cli("dr", "health-check", "--json")
    assert health.returncode == 1 and json.loads(health.stdout)["issues"][0]["key"] == "no_backup:docs"
    for secret in (SLACK_PATH, PAGERDUTY_KEY):
        assert secret not in run.stdout + run.stderr


def test_a_failed_drill_reaches_email_slack_and_sentry_and_an_old_verified_restore_alerts(
    alerting: tuple[Factory, Channels, dict[str, Any]], tmp_path: Path
) -> None:
    from app.catalog.models import Drill

    factory, channels, _ = alerting
    system = factory()
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=1, small=3))
    system.create_full_backup("docs")
    [passed] = system.run_restore_drills("docs")
    assert passed.outcome == "passed"
    health = get_health_status(system.context)
    assert health.status == "healthy", health.to_json()

    # every job succeeds, but the last verified restore is 15 days old: past twice the weekly drill
    with transaction(system.context.sessions) as session:
        session.execute(update(Drill).values(started_at=clock.now() - timedelta(days=15)))
    assert [i.key for i in get_health_status(system.context).issues] == ["restore_unverified:docs"]
    assert evaluate_alerts(system.context).opened == ["restore_unverified:docs"]

    storage = system.context.storage
    biggest = max(storage.list(Kind.PACKS), key=lambda info: info.size)
    data = bytearray(storage.get(Kind.PACKS, biggest.name))
    data[300] ^= 0x01
    storage.put(Kind.PACKS, biggest.name, bytes(data))
    [failed] = system.run_restore_drills("docs")
    assert failed.outcome == "failed"
    report = evaluate_alerts(system.context)
    assert "drill_failed:docs" in report.opened
    evaluate_alerts(system.context)
    assert channels.heard("drill_failed:docs") == {
        "email": _counts(open=1),
        "slack": _counts(open=1),
        "pagerduty": _counts(),  # the spec's table: e-mail + Slack, never a page
        "sentry": _counts(open=1),
    }


def test_orphaned_objects_in_storage_are_counted_and_alerted(
    alerting: tuple[Factory, Channels, dict[str, Any]], tmp_path: Path
) -> None:
    factory, channels, _ = alerting
    system = factory()
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=0, small=3))
    system.create_full_backup("docs")
    assert not [i for i in get_health_status(system.context).issues if i.condition == "orphaned_objects"]
    storage = system.context.storage
    storage.put(Kind.UNITS, "20260101T000000Z-dead00.1", b"a unit result of a backup long gone")
    storage.put(Kind.PACKS, "ab" * 32, b"a pack no catalog row names")
    health = get_health_status(system.context)
    issue = next(i for i in health.issues if i.condition == "orphaned_objects")
    assert (
        "2 orphaned object(s)" in issue.message
        and "1 in units/" in issue.message
        and "1 in packs/" in issue.message
    )
    assert health.checks["orphans"]["orphans"] == {"units": 1, "packs": 1}
    assert evaluate_alerts(system.context).opened == ["orphaned_objects:primary"]
    storage.delete(Kind.UNITS, "20260101T000000Z-dead00.1")
    storage.delete(Kind.PACKS, "ab" * 32)
    assert evaluate_alerts(system.context).resolved == ["orphaned_objects:primary"]
    assert channels.heard("orphaned_objects:primary")["email"] == _counts(open=1, resolve=1)


def test_an_incident_whose_check_times_out_stays_open(
    alerting: tuple[Factory, Channels, dict[str, Any]], tmp_path: Path
) -> None:
    import threading

    factory, channels, _ = alerting
    system = factory()
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=0, small=3))
    system.create_full_backup("docs")
    _age_backups(system, 9)
    assert evaluate_alerts(system.context).opened == ["stale_backup:docs"]
    release = threading.Event()

    def slow(*_: Any) -> CheckResult:
        release.wait(30)
        return CheckResult()

    system.context.settings.health_check_timeout = 1
    try:
        health = get_health_status(system.context, {"backups": slow})
    finally:
        release.set()
    report = evaluate_alerts(system.context, health)
    assert report.resolved == [] and "stale_backup:docs" in report.open
    assert channels.heard("stale_backup:docs")["email"] == _counts(open=1)


def test_an_evaluation_while_another_holds_the_lease_does_nothing(
    alerting: tuple[Factory, Channels, dict[str, Any]], tmp_path: Path
) -> None:
    from app.alerts.incidents import LOCK
    from app.catalog import locks

    factory, channels, _ = alerting
    system = factory()
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=0, small=2))  # no backup: an issue
    holder = locks.new_holder()
    locks.acquire(system.context.sessions, LOCK, holder, timedelta(minutes=5))
    try:
        report = evaluate_alerts(system.context)
    finally:
        locks.release(system.context.sessions, LOCK, holder)
    assert report.skipped and LOCK in report.skipped and report.opened == []
    assert channels.heard("no_backup:docs")["email"] == _counts()
    assert evaluate_alerts(system.context).opened == ["no_backup:docs"]
