"""Monitoring: the health of the backup system as a status and a list of issues, each naming its
condition (health.py and the checks it runs: backup_health, recovery_health, storage_health,
replication_health) against the thresholds (thresholds.py); the metrics (metrics.py, work_metrics.py, sample.py, exposition.py);
the runbook probes and storage status; and the reaper that keeps no job `running` after its worker
died. Alerts on the conditions are app/alerts/."""
