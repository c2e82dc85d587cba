"""What a job's fork server does for itself, imported by it alone, first of its preloads
(app/forkserver.py): it collects garbage rarely while it imports the data path (the collector's
default thresholds re-scanned the growing heap of imported modules over and over: ~7 % of the imports'
CPU), and when the job's process stops it, it ends at once instead of tearing down what it imported.

The job's process waits for its fork server to end (so the workers' CPU time counts as the job's), at
the end of every backup and restore that used worker processes: the interpreter's tear-down of the data
path (SQLAlchemy, the catalog's models, boto3) took 0.1-0.5 s there, `os._exit` 20 ms. Nothing is lost:
the fork server holds no open file, connection or buffer of the job's; its workers have ended and been
reaped (each worker's `join` in the job's process waits for the server to reap it)."""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sys


def _end_now() -> None:
    while True:  # reap any worker that has ended since: its CPU time then counts as the job's
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:  # one still runs (a job that failed): left as the server's normal exit leaves it
            break
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    # an uncaught error already printed its traceback; keep its exit status
    os._exit(1 if hasattr(sys, "last_value") else 0)


gc.set_threshold(50_000, 20, 100)  # as the CLI does (app/cli/entry.py); its workers keep it
atexit.register(_end_now)
