"""Monitoring: the health of the backup system as a status and a list of issues, and the reaper that
keeps no job `running` after its worker died. Alerts (e-mail, Slack, PagerDuty, Sentry) come later."""
