"""Celery settings, derived from the one settings object (app/settings.py). JSON only: no pickle."""

from app.settings import load_settings

_settings = load_settings()

broker_url = _settings.celery_broker_url or "redis://127.0.0.1:6379/0"
result_backend = broker_url
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_track_started = True
worker_send_task_events = True
task_send_sent_event = True
timezone = "UTC"
task_routes = {"tasks.backup.*": {"queue": "backup"}, "tasks.restore.*": {"queue": "restore"}}
