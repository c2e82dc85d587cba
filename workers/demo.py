"""`python -m workers.demo`: the README's main command. The demo of app/cli/demo.py with every backup
going through the cluster's job flow (run_backup plans, a chord of backup_unit tasks, finalize_backup)
in Celery's eager mode, so no broker, database or worker is needed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: Settings of the embedded defaults; the worker-side Context reads the environment.
_SERVER_VARIABLES = ("DATABASE_URL", "BACKUP_STORAGE_URL", "BACKUP_ENCRYPTION_KEY", "BACKUP_ENCRYPTION_KEY_FILE",
                     "CELERY_BROKER_URL", "SENTRY_DSN")


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    home = Path(args[0] if args else ".demo").resolve()
    for name in _SERVER_VARIABLES:
        os.environ.pop(name, None)
    os.environ["EQUISPLIT_DR_HOME"] = str(home)
    os.environ["BACKUP_UNIT_BYTES"] = str(4 << 20)  # a few units even for the small sample tree

    from app.cli.demo import run_demo
    from app.system import BackupSystem
    from tasks.backup import run_backup
    from workers import app

    app.conf.update(task_always_eager=True, task_eager_propagates=True, broker_url="memory://",
                    result_backend="cache+memory://")

    def via_cluster(_system: BackupSystem, source: str, backup_type: str) -> str:
        summary = run_backup.delay(source, backup_type).get()
        return str(summary["backup_id"])

    ok = run_demo(home, via_cluster, flow="through the Celery job flow (eager mode: no broker needed)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
