"""The Celery app object. Every task gets workers.base.EquisplitTask as its base class."""

from celery import Celery

from app.settings import load_settings
from workers.security import setup_signing

app = Celery(
    "equisplit-dr",
    include=[
        "tasks.backup",
        "tasks.restore",
        "tasks.monitor",
        "tasks.retention",
        "tasks.audit",
        "tasks.verify",
        "tasks.wal",
        "tasks.replicate",
        "tasks.maintenance",
    ],
    task_cls="workers.base:EquisplitTask",
)
app.config_from_object("celeryconfig")
setup_signing(app, load_settings())

from workers import schedule, signals  # noqa: E402,F401  (register the beat schedule and signal handlers)
