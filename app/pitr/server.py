"""The recovered PostgreSQL server: is a directory in use, start it as the cluster's owner, ask it
questions, and read its log (docs/PITR.md section 4).

PostgreSQL's programs refuse to run as root, so as root every command runs as the owner through
`runuser` (which passes the environment on). The server's environment, which holds the master key and
storage credentials for restore_command, is handed over as the process environment, never in a command
line (`ps` shows every user a command line). `pg_ctl start` says nothing about recovery (it returns 0 even when recovery dies later), so
the caller watches the server itself: alive, in recovery or not, and what its log says.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from app.errors import ConfigurationError, RecoveryError

LOG_NAME = "equisplit-dr-recovery.log"


@dataclass(frozen=True)
class ServerTools:
    """Where PostgreSQL's programs are and which OS user runs them."""

    bin_dir: Path
    owner: str | None  # None: run as this process's user

    def command(self, program: str, *args: str) -> list[str]:
        prefix = ["runuser", "-u", self.owner, "--"] if self.owner is not None else []
        return [*prefix, str(self.bin_dir / program), *args]


def find_bin_dir(configured: Path | None, major: str, program: str = "pg_ctl") -> Path:
    """`configured`, else /usr/lib/postgresql/<major>/bin (Debian, Ubuntu), else `program`'s directory
    on PATH; the directory must hold `program`."""
    candidates = [configured] if configured else [Path(f"/usr/lib/postgresql/{major}/bin")]
    for candidate in candidates:
        if (candidate / program).exists():
            return candidate
    on_path = shutil.which(program)
    if configured is None and on_path:
        return Path(on_path).parent
    raise ConfigurationError(
        f"PostgreSQL {major}'s programs ({program}) are not at {candidates[0]} nor on PATH",
        hint="install PostgreSQL of the backup's major version, or set PG_BIN_DIR",
    )


def running_pid(data_dir: Path) -> int | None:
    """The pid of a live postmaster using `data_dir` (from its postmaster.pid), or None."""
    try:
        first = (data_dir / "postmaster.pid").read_text().splitlines()[0]
        pid = int(first.strip())
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # alive, owned by another user
    return pid


def check_target_dir(target: Path) -> None:
    """Refuse a directory a server is using, or one that is not empty: nothing is overwritten."""
    if target.exists() and not target.is_dir():
        raise RecoveryError(f"recovery target {target} exists and is not a directory")
    pid = running_pid(target)
    if pid is not None:
        raise RecoveryError(
            f"recovery target {target} is in use by a running PostgreSQL server (pid {pid})",
            hint="recover into a new, empty directory; never over a live cluster",
        )
    if target.is_dir() and any(target.iterdir()):
        raise RecoveryError(
            f"recovery target {target} is not empty",
            hint="recover into a new or empty directory (an old cluster there is left untouched)",
        )


def start(tools: ServerTools, data_dir: Path, env: dict[str, str]) -> None:
    """`pg_ctl start` without waiting, with `env` as the server's whole environment (runuser adds
    the owner's HOME, SHELL, USER and LOGNAME); the caller watches recovery. RecoveryError if it
    cannot start."""
    log = data_dir / LOG_NAME
    proc = subprocess.run(
        tools.command("pg_ctl", "-D", str(data_dir), "-l", str(log), "-W", "start"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        env=env,
    )
    if proc.returncode != 0:
        raise RecoveryError(
            f"pg_ctl could not start the recovered server in {data_dir}",
            detail=(proc.stderr or proc.stdout).strip()[-1000:] + "\n" + read_log(data_dir)[-2000:],
        )


def stop(tools: ServerTools, data_dir: Path, mode: str = "fast") -> None:
    subprocess.run(
        tools.command("pg_ctl", "-D", str(data_dir), "-m", mode, "-w", "stop"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )


def query(tools: ServerTools, socket_dir: Path, port: int, user: str, sql: str) -> list[str] | None:
    """One row of `sql` as text fields, through psql on the server's socket; None if it cannot answer
    (not accepting connections yet)."""
    answer = ask(tools, socket_dir, port, user, sql)
    return answer if isinstance(answer, list) else None


def ask(tools: ServerTools, socket_dir: Path, port: int, user: str, sql: str) -> list[str] | str:
    """One row of `sql` as text fields, or psql's error when the server does not answer."""
    proc = subprocess.run(
        tools.command(
            "psql", "-X", "-A", "-t", "-F", "\t", "-h", str(socket_dir), "-p", str(port), "-U", user,
            "-d", "postgres", "-c", sql,
        ),
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGCONNECT_TIMEOUT": "5"},
    )  # fmt: skip
    if proc.returncode != 0:
        return (proc.stderr or proc.stdout).strip()[-500:] or f"psql exited {proc.returncode}"
    lines = proc.stdout.rstrip("\n").splitlines()  # not strip(): a last empty field is a trailing tab
    return lines[0].split("\t") if lines else []


def log_tail(data_dir: Path, lines: int = 30) -> str:
    """The last `lines` lines of the recovered server's log."""
    return "\n".join(read_log(data_dir).splitlines()[-lines:])


def read_log(data_dir: Path) -> str:
    try:
        return (data_dir / LOG_NAME).read_text(errors="replace")
    except OSError:
        return ""
