"""Alerts: the health conditions (app/monitoring/health.py) followed as incidents and told to people.

Nouns: an incident (one condition key while it lasts: opened, perhaps escalated, then resolved; rows in
the catalog's `incidents` table), an alert (one message about an incident: open, escalate, resolve or
test), a channel (Sentry, e-mail over SMTP, a Slack webhook, PagerDuty's Events API v2; one module
each behind `Channel`), and the policy saying which channels hear which severity of which condition.
"""
