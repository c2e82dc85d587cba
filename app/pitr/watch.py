"""Starting the recovered server and watching recovery to its end (docs/PITR.md section 4): a server
that stops, or promotes short of its target, is a failure though pg_ctl said 0."""

from __future__ import annotations

import os
import pwd
import re
import time
from datetime import datetime
from pathlib import Path

from app import clock
from app.context import Context
from app.errors import RecoveryError
from app.pitr import server
from app.pitr.options import RecoveryOptions, RecoveryResult
from app.pitr.plan import RecoveryPlan
from app.pitr.target import LATEST, TIME

#: Settings passed to the recovered server's environment, so restore_command finds the repository.
SERVER_ENV = (
    "BACKUP_STORAGE_URL",
    "BACKUP_ENCRYPTION_KEY",
    "BACKUP_ENCRYPTION_KEY_FILE",
    "WAL_PREFETCH",
    "WAL_PREFETCH_CONCURRENCY",
    "PYTHONPATH",
)
#: Also passed: boto3's own settings (credentials, region, profile and config files, CA bundle, endpoint),
#: without which restore_command cannot read a repository on S3 when they come from the environment.
SERVER_ENV_PREFIXES = ("AWS_",)
_STOPPING = re.compile(r"recovery stopping (before|after|at) [^\n]*")
_FATAL = re.compile(r"(?:FATAL|PANIC):\s+[^\n]*")
#: What a connection attempt is told while the server starts or recovers: not the reason it stopped.
_CONNECTING = re.compile(r"the database system is (starting up|not yet accepting|shutting down)")
#: Told while recovery goes on (hot_standby off: no connection until it ends): wait, within the timeout.
_RECOVERING = re.compile(r"the database system is (starting up|not yet accepting|not accepting|in recovery)")
#: Told whatever the wait: the role, its authentication or the database is refused. Fail at once.
_REFUSED = re.compile(
    r'role "[^"]*" does not exist|authentication failed|no pg_hba\.conf entry|database "[^"]*" does not exist'
)


def server_env(ctx: Context, source: str) -> dict[str, str]:
    """The recovered server's whole environment: what restore_command needs to reach the repository."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "EQUISPLIT_DR_HOME": str(ctx.settings.home),
        "EQUISPLIT_DR_SOURCE": source,
    }
    env.update({name: os.environ[name] for name in SERVER_ENV if name in os.environ})
    env.update({name: value for name, value in os.environ.items() if name.startswith(SERVER_ENV_PREFIXES)})
    if getattr(ctx, "region", None) is not None:  # restore_command reads WAL from the region recovered from
        env["BACKUP_STORAGE_URL"] = ctx.storage_url
    return env


def start_and_watch(
    ctx: Context,
    plan: RecoveryPlan,
    target_dir: Path,
    options: RecoveryOptions,
    tools: server.ServerTools,
    result: RecoveryResult,
) -> None:
    started = time.monotonic()
    port = options.port or 5432
    user = watch_user(ctx, plan.source, options, tools)
    socket_dir = options.socket_dir or target_dir
    server.start(tools, target_dir, server_env(ctx, plan.source))
    timeout = options.timeout or ctx.settings.pitr_recovery_timeout
    connect_timeout = options.connect_timeout or ctx.settings.pitr_connect_timeout
    deadline = started + timeout
    seen_running = False
    refused_since: float | None = None
    while True:
        alive = server.running_pid(target_dir) is not None
        seen_running = seen_running or alive
        if not alive and (seen_running or time.monotonic() - started > 30):
            log = server.read_log(target_dir)
            fatal = [line for line in _FATAL.findall(log) if not _CONNECTING.search(line)]
            raise RecoveryError(
                "the recovered server stopped before recovery finished" + (f": {fatal[-1]}" if fatal else ""),
                detail=log[-3000:],
                hint=_hint_for(fatal[-1] if fatal else ""),
            )
        row = server.ask(
            tools,
            socket_dir,
            port,
            user,
            "SELECT pg_is_in_recovery(), pg_last_xact_replay_timestamp(), pg_last_wal_replay_lsn(), "
            "CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '' END",
        )
        if isinstance(row, list):
            refused_since = None
            if len(row) == 4:
                in_recovery, reached, replay_lsn, pause = row
                if in_recovery == "f" or (options.action == "pause" and pause == "paused"):
                    result.restored_timestamp = _parse_pg_time(reached)
                    result.reached_lsn = replay_lsn or None
                    break
        elif alive and _REFUSED.search(row):
            raise RecoveryError(
                f"the recovered server refuses to let this watch connect as role {user!r}: "
                f"{_last_line(row)} (the server is left running)",
                detail=server.log_tail(target_dir),
                hint="pass --user ROLE, a role of the source cluster that may log in over its socket "
                "(default: the user of the source's DSN)",
            )
        elif alive and not _RECOVERING.search(row):
            refused_since = refused_since or time.monotonic()
            if time.monotonic() - refused_since > connect_timeout:
                raise RecoveryError(
                    f"the recovered server refused connections for {connect_timeout} s: {_last_line(row)} "
                    "(the server is left running)",
                    detail=server.log_tail(target_dir),
                    hint=f"see {target_dir / server.LOG_NAME}; raise PITR_CONNECT_TIMEOUT if it needs longer",
                )
        if time.monotonic() > deadline:
            raise RecoveryError(
                f"recovery did not finish within {timeout} s (the server is left running)",
                detail=server.log_tail(target_dir),
                hint="raise PITR_RECOVERY_TIMEOUT or --timeout for a long replay; see "
                f"{target_dir / server.LOG_NAME}",
            )
        time.sleep(0.2)
    result.recovery_seconds = time.monotonic() - started
    _verify_reached(plan, target_dir, tools, socket_dir, port, user, result)


def watch_user(ctx: Context, source: str, options: RecoveryOptions, tools: server.ServerTools) -> str:
    """The role recovery is watched as: `--user`, else the source DSN's user (the recovered cluster has
    the source's roles), else what libpq took then (PGUSER, or the OS user: the owner here)."""
    if options.db_user:
        return options.db_user
    from psycopg import Error, conninfo

    from app.catalog.sources import get_source

    with ctx.sessions() as session:
        dsn = str(get_source(session, source).options.get("dsn") or "")
    try:
        dsn_user = conninfo.conninfo_to_dict(dsn).get("user") if dsn else None
    except Error:
        dsn_user = None
    return str(dsn_user or os.environ.get("PGUSER") or tools.owner or pwd.getpwuid(os.geteuid()).pw_name)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else text


def _verify_reached(
    plan: RecoveryPlan,
    target_dir: Path,
    tools: server.ServerTools,
    socket_dir: Path,
    port: int,
    user: str,
    result: RecoveryResult,
) -> None:
    """A server that ended recovery before its target is a failure, though it runs."""
    found = _STOPPING.search(server.read_log(target_dir))
    result.stop_reason = found.group(0) if found else None
    timeline = server.query(
        tools,
        socket_dir,
        port,
        user,
        "SELECT CASE WHEN pg_is_in_recovery() THEN '' "
        "ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END",
    )
    if timeline and timeline[0]:
        result.timeline = int(timeline[0], 16)
    target = plan.target
    if target.kind != LATEST and found is None:
        result.success = False
        result.message = (
            f"recovery ended without reaching {target.describe()}: PostgreSQL found no record past the target "
            "in the archived WAL and stopped short of it"
        )
        return
    if (
        target.kind == TIME
        and target.time is not None
        and result.restored_timestamp is not None
        and result.restored_timestamp > target.time
    ):
        result.success = False
        result.message = (
            f"recovery went past the target: it reached {clock.iso(result.restored_timestamp)}, "
            f"after {clock.iso(target.time)}"
        )
        return
    if server.query(tools, socket_dir, port, user, "SELECT count(*) FROM pg_database") is None:
        result.success = False
        result.message = "the recovered server does not answer queries"
        return
    result.success = True
    result.message = (
        f"recovered to {clock.iso(result.restored_timestamp) or 'the end of the base backup'}; "
        f"the server runs on port {port}"
    )


def _hint_for(fatal: str) -> str:
    if "before configured recovery target was reached" in fatal:
        return (
            "the archived WAL holds no transaction after the target (PostgreSQL needs one to know it has "
            "passed it): recover to `latest` or to the last transaction's time"
        )
    if "requested recovery stop point is before consistent recovery point" in fatal:
        return "the target is before the end of the base backup: pick a later target or an older backup"
    return f"see the server log in the recovered directory ({server.LOG_NAME})"


def _parse_pg_time(text: str | None) -> datetime | None:
    if not text:
        return None
    value = text.strip()
    if re.search(r"[+-]\d\d$", value):
        value += ":00"
    return clock.as_utc(datetime.fromisoformat(value))
