"""The configured channels, built from the settings; and the policy saying which channels hear an
alert, from the spec's alert table:

| condition             | warning                 | critical (escalated)        |
|-----------------------|-------------------------|-----------------------------|
| backup_failed         | Sentry, e-mail          | + Slack, PagerDuty (3 fails)|
| verification_failed   | -                       | all four, immediately       |
| drill_failed          | Sentry, e-mail, Slack   | (no PagerDuty)              |
| any other condition   | Sentry, e-mail, Slack   | + PagerDuty                 |
"""

from __future__ import annotations

from app.alerts.message import Channel
from app.alerts.pagerduty import PagerDutyChannel
from app.alerts.sentry import SentryChannel
from app.alerts.sentry_api import SentryIssues, api_base_from_dsn
from app.alerts.slack import SlackChannel
from app.alerts.smtp import SmtpChannel
from app.settings import Settings

ALL = ("sentry", "email", "slack", "pagerduty")


def channels_for(condition: str, severity: str) -> tuple[str, ...]:
    """The channels an incident of `condition` at `severity` must reach."""
    if condition == "backup_failed" and severity == "warning":
        return ("sentry", "email")
    if condition == "drill_failed":
        return ("sentry", "email", "slack")
    if severity == "critical":
        return ALL
    return ("sentry", "email", "slack")


def configured_channels(settings: Settings) -> dict[str, Channel]:
    """Each channel whose settings are present, by name."""
    timeout = float(settings.health_check_timeout)
    found: dict[str, Channel] = {}
    if settings.sentry_dsn is not None:
        dsn = settings.sentry_dsn.get_secret_value()
        issues = None
        if settings.sentry_auth_token is not None and settings.sentry_org and settings.sentry_project:
            issues = SentryIssues(
                settings.sentry_api_url or api_base_from_dsn(dsn),
                settings.sentry_org,
                settings.sentry_project,
                settings.sentry_auth_token.get_secret_value(),
                timeout,
            )
        found["sentry"] = SentryChannel(dsn, timeout, issues)
    if settings.smtp_host and settings.dr_alert_emails:
        found["email"] = SmtpChannel(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_from,
            list(settings.dr_alert_emails),
            timeout,
            user=settings.smtp_user,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            starttls=settings.smtp_starttls,
        )
    if settings.dr_slack_webhook is not None:
        found["slack"] = SlackChannel(settings.dr_slack_webhook.get_secret_value(), timeout)
    if settings.dr_pagerduty_key is not None:
        found["pagerduty"] = PagerDutyChannel(
            settings.dr_pagerduty_key.get_secret_value(), settings.dr_pagerduty_events_url, timeout
        )
    return found


def close_channels(channels: dict[str, Channel]) -> None:
    for channel in channels.values():
        close = getattr(channel, "close", None)
        if close is not None:
            close()
