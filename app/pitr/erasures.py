"""The erasure ledger applied to a recovered server before it is handed back (docs/GDPR.md): each
request's SQL through psql on the server's socket, in one transaction, stopping at its first error."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from app.context import Context
from app.gdpr.reapply import ReapplyReport, reapply_erasures
from app.pitr import server
from app.pitr.options import RecoveryOptions
from app.pitr.watch import watch_user


def reapply_on_server(
    ctx: Context,
    source: str,
    target_dir: Path,
    options: RecoveryOptions,
    tools: server.ServerTools,
    actor: str | None,
) -> ReapplyReport:
    user = watch_user(ctx, source, options, tools)  # the role recovery was watched as
    socket_dir = options.socket_dir or target_dir
    port = options.port or 5432

    def run(database: str, sql: str) -> str | None:
        proc = subprocess.run(
            tools.command(
                "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-h", str(socket_dir),
                "-p", str(port), "-U", user, "-d", database, "-c", sql,
            ),
            capture_output=True,
            text=True,
            timeout=600,
            cwd="/",
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGCONNECT_TIMEOUT": "10"},
        )  # fmt: skip
        if proc.returncode == 0:
            return None
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return lines[-1] if lines else f"psql exit status {proc.returncode}"

    return reapply_erasures(ctx, source, f"pitr {target_dir}", run, actor=actor)
