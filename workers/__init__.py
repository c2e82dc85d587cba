"""The Celery application (`celery -A workers worker`): configuration from celeryconfig.py, tasks from
tasks/. Signals and the beat schedule live here as the cluster grows."""

from workers.app import app

__all__ = ["app"]
