"""Celery settings, derived from the one settings object (app/settings.py). JSON only: no pickle.

With no CELERY_BROKER_URL the app falls back to Redis on 127.0.0.1; `equisplit-dr demo` and the
tests' eager mode need no broker at all. With CELERY_SECURITY_* set, task messages are JSON signed
with Celery's `auth` serializer and workers accept signed ones only (workers/app.py: setup_security).
"""

from __future__ import annotations

import ssl
from typing import Any

from kombu import Queue

from app.settings import load_settings

_settings = load_settings()

QUEUES = ("backup", "chunks", "wal", "restore", "verify", "replicate", "maintenance", "monitor")
#: The longest task (a unit of BACKUP_UNIT_BYTES, a restore) must end well inside these limits, and
#: the broker's visibility timeout must exceed them, or Redis hands the task to a second worker.
SOFT_TIME_LIMIT = 3 * 3600
HARD_TIME_LIMIT = SOFT_TIME_LIMIT + 300
VISIBILITY_TIMEOUT = HARD_TIME_LIMIT + 1800

broker_url = _settings.celery_broker_url or "redis://127.0.0.1:6379/0"
result_backend = _settings.celery_result_backend or broker_url
broker_connection_retry_on_startup = True
broker_transport_options: dict[str, Any] = {
    "visibility_timeout": VISIBILITY_TIMEOUT,
    "socket_timeout": 10,
    "socket_connect_timeout": 10,
}
result_backend_transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT}
if broker_url.startswith("rediss://"):
    broker_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
if result_backend.startswith("rediss://"):
    redis_backend_use_ssl = {"ssl_cert_reqs": ssl.CERT_REQUIRED}

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
if _settings.message_signing:
    task_serializer = "auth"  # JSON inside, signed with our key
    accept_content = ["auth"]  # an unsigned task message is refused, never run
    security_key = str(_settings.celery_security_key)
    security_certificate = str(_settings.celery_security_certificate)
    security_cert_store = _settings.celery_security_cert_store
    security_digest = "sha256"
    if _settings.celery_security_key_password is not None:
        security_key_password = _settings.celery_security_key_password.get_secret_value().encode()
result_expires = 7 * 24 * 3600
result_extended = True

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_soft_time_limit = SOFT_TIME_LIMIT
task_time_limit = HARD_TIME_LIMIT
task_track_started = True
worker_send_task_events = True
task_send_sent_event = True
worker_cancel_long_running_tasks_on_connection_loss = True

timezone = _settings.schedule_timezone
enable_utc = True

task_queues = [Queue(name) for name in QUEUES]
task_default_queue = "backup"
task_routes = {
    "tasks.backup.backup_unit": {"queue": "chunks"},
    "tasks.backup.*": {"queue": "backup"},
    "tasks.restore.*": {"queue": "restore"},
    "tasks.wal.*": {"queue": "wal"},
    "tasks.monitor.*": {"queue": "monitor"},
    "tasks.verify.*": {"queue": "verify"},
    "tasks.retention.*": {"queue": "maintenance"},
    "tasks.audit.*": {"queue": "maintenance"},
    "tasks.replicate.*": {"queue": "replicate"},
    "tasks.maintenance.*": {"queue": "maintenance"},
}
