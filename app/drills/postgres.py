"""A PostgreSQL source's drill: recover its newest point into a scratch directory, start it on a free
port, check it (pg_amcheck over every database, a row count of every table), stop it and remove it.
The copy never archives into production (recovery writes archive_mode = off)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from app import clock
from app.context import Context
from app.drills.result import DrillResult
from app.errors import RecoveryError
from app.pitr import server
from app.pitr.execute import recover
from app.pitr.options import RecoveryOptions
from app.pitr.target import LATEST, RecoveryTarget
from app.pitr.watch import watch_user

#: One query a database: every ordinary table with its row count.
COUNT_ROWS = (
    "SELECT format('%I.%I', n.nspname, c.relname), "
    "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), "
    "false, true, '')))[1]::text "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drill_postgres(
    ctx: Context,
    source: str,
    scratch: Path,
    result: DrillResult,
    *,
    owner: str | None = None,
    actor: str | None = None,
) -> None:
    """Recover, start, check, stop, remove; fills in `result` (RecoveryError when recovery fails)."""
    options = RecoveryOptions(target_dir=scratch, start=True, port=free_port(), owner=owner)
    recovery = recover(ctx, source, RecoveryTarget(LATEST), options, actor=actor)
    result.backup_id = recovery.plan.backup.id
    tools = None
    try:
        if not recovery.success:
            raise RecoveryError(
                f"the drill's recovery failed: {recovery.message}", detail="\n".join(recovery.problems[-5:])
            )
        result.rto_seconds = recovery.rto_seconds
        result.point_reached = recovery.restored_timestamp or clock.as_utc(recovery.plan.backup.stopped_at)
        result.rpo_seconds = (clock.now() - result.point_reached).total_seconds()
        result.checks.append(
            f"recovered from base backup {recovery.plan.backup.id} to {clock.iso(result.point_reached)} "
            f"in {recovery.rto_seconds or 0:.1f} s, started on port {options.port}"
        )
        if recovery.erasures and recovery.erasures.get("applied"):
            result.checks.append(
                f"re-applied {len(recovery.erasures['applied'])} erasure request(s) before checking (docs/GDPR.md)"
            )
        tools = _tools(ctx, recovery.plan.backup.id, options.owner)
        user = watch_user(ctx, source, options, tools)
        socket_dir = options.socket_dir or scratch
        _check_rows(tools, socket_dir, options.port or 0, user, result)
        _amcheck(tools, socket_dir, options.port or 0, user, result)
    finally:
        if tools is None:
            tools = _tools(ctx, recovery.plan.backup.id, options.owner)
        if server.running_pid(scratch) is not None:
            server.stop(tools, scratch, "immediate")
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(options.tablespace_root(scratch), ignore_errors=True)
        if options.socket_dir is not None and options.socket_dir != scratch:
            shutil.rmtree(options.socket_dir, ignore_errors=True)


def _tools(ctx: Context, backup_id: str, owner: str | None) -> server.ServerTools:
    version = ctx.repository.read_manifest_header(backup_id).get("postgres", {}).get("server_version")
    major = str(int(version) // 10000) if version else "15"
    run_as = (owner or "postgres") if os.geteuid() == 0 else None
    return server.ServerTools(server.find_bin_dir(ctx.settings.pg_bin_dir, major, "pg_amcheck"), run_as)



def _run(tools: server.ServerTools, program: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One of PostgreSQL's programs against the drill's server, as its owner, with no secret around."""
    return subprocess.run(
        tools.command(program, *args),
        capture_output=True,
        text=True,
        timeout=3600,
        cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGCONNECT_TIMEOUT": "10"},
    )


def _psql(
    tools: server.ServerTools, socket_dir: Path, port: int, user: str, db: str, sql: str
) -> list[list[str]]:
    proc = _run(
        tools, "psql", "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-h", str(socket_dir),
        "-p", str(port), "-U", user, "-d", db, "-c", sql,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RecoveryError(
            f"the drill's query on database {db} failed: {proc.stderr.strip().splitlines()[-1:]}",
            hint="see the recovered server's log; the backup may be inconsistent",
        )
    return [line.split("\t") for line in proc.stdout.splitlines() if line]


def _check_rows(
    tools: server.ServerTools, socket_dir: Path, port: int, user: str, result: DrillResult
) -> None:
    databases = [row[0] for row in _psql(
        tools, socket_dir, port, user, "postgres",
        "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
    )]  # fmt: skip
    tables = rows = 0
    for db in databases:
        for _name, count in _psql(tools, socket_dir, port, user, db, COUNT_ROWS):
            tables += 1
            rows += int(count)
    result.checks.append(f"counted {rows} row(s) in {tables} table(s) of {len(databases)} database(s)")


def _amcheck(tools: server.ServerTools, socket_dir: Path, port: int, user: str, result: DrillResult) -> None:
    proc = _run(
        tools, "pg_amcheck", "-h", str(socket_dir), "-p", str(port), "-U", user, "--all", "--install-missing",
        "--heapallindexed",
    )  # fmt: skip
    if proc.returncode == 0:
        result.checks.append("pg_amcheck --all --heapallindexed: no corruption")
        return
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    result.problems.append(f"pg_amcheck exit {proc.returncode}: " + "; ".join(lines[-5:]))
