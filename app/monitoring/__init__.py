"""Monitoring: the health of the backup system as a status and a list of issues, the reaper that
keeps no job `running` after its worker died, and alerts (an error-level log line, which Sentry turns
into an event where configured; e-mail, Slack and PagerDuty come later)."""
