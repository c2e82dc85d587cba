"""The Celery app object."""

from celery import Celery

app = Celery("equisplit-dr", include=["tasks.backup", "tasks.restore"])
app.config_from_object("celeryconfig")
