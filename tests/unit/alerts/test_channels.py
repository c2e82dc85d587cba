"""The channel policy follows the spec's alert table; channels are built only from settings present."""

from __future__ import annotations

from pathlib import Path

from app.alerts.channels import channels_for, configured_channels
from app.settings import load_settings


def test_the_policy_follows_the_alert_table() -> None:
    assert channels_for("backup_failed", "warning") == ("sentry", "email")  # 1 failure: e-mail
    assert "pagerduty" in channels_for("backup_failed", "critical")  # PagerDuty after 3
    assert channels_for("verification_failed", "critical") == ("sentry", "email", "slack", "pagerduty")
    assert channels_for("drill_failed", "warning") == ("sentry", "email", "slack")  # e-mail + Slack
    assert "pagerduty" not in channels_for("drill_failed", "critical")
    assert "pagerduty" not in channels_for("stale_backup", "warning")
    assert "pagerduty" in channels_for("stale_backup", "critical")


def test_only_configured_channels_are_built(tmp_path: Path) -> None:
    bare = load_settings(
        equisplit_dr_home=tmp_path, sentry_dsn=None, dr_slack_webhook=None, dr_pagerduty_key=None
    )
    assert configured_channels(bare) == {}
    emails_without_server = load_settings(equisplit_dr_home=tmp_path, dr_alert_emails="ops@example.test")
    assert "email" not in configured_channels(emails_without_server)
    full = load_settings(
        equisplit_dr_home=tmp_path,
        dr_alert_emails="ops@example.test",
        smtp_host="127.0.0.1",
        dr_slack_webhook="http://127.0.0.1:9/hook",
        dr_pagerduty_key="key",
        sentry_dsn="http://public@127.0.0.1:9/1",
    )
    assert sorted(configured_channels(full)) == ["email", "pagerduty", "sentry", "slack"]
