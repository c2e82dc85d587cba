"""Throwaway PostgreSQL 15 clusters whose archive_command and restore_command are our CLI.

Use it from a conftest: `from tests.support.pgcluster import pg_template  # noqa: F401`, then build a
cluster per test with `PgCluster.create(...)` inside `with`, or through a fixture that does.

How this works on the project's machine (Debian 12, tests run as root), and why:

* initdb, pg_ctl and postgres refuse to run as root, so every server command runs as the `postgres`
  OS user (`runuser -u postgres --`), in a directory under /tmp that the user owns. pytest's tmp_path
  cannot be used: /tmp/pytest-of-root is mode 0700.
* archive_command and restore_command run as `postgres` too, so they need a Python that user can run.
  The venv's interpreter is a symlink into /root/.pyenv, and /root is 0700: `postgres` cannot execute
  it, and changing /root's mode is off-limits. `python_for_postgres()` therefore uses sys.executable
  when `postgres` can run it, and otherwise a system python3 of the same minor version with the
  project and the venv's site-packages on PYTHONPATH (the compiled wheels are built per minor version,
  cp311, so they load). It proves the choice by importing the CLI as `postgres`, and fails the test
  with the reason if nothing works: never a silent skip.
* A server passes its environment to archive_command, so pg_ctl is started under `env -i` with
  exactly what the commands need: EQUISPLIT_DR_HOME (the archive's catalog, repository and key file),
  EQUISPLIT_DR_SOURCE, PYTHONPATH, and what a test adds (CELERY_BROKER_URL at a socket that never
  answers, to show push never needs the broker). Nothing of the test runner's environment leaks in.
* The archive home is created as root (`equisplit-dr init`) and then given to `postgres`, which
  writes it from archive_command; the tests, as root, read and damage it. SQLite running as root gives
  the -wal and -shm files it creates the database file's owner, so both users keep access.
* `initdb --wal-segsize=1` (1 MiB segments) runs once per session into a template; each cluster is a
  `cp -a` of it (~0.1 s, against ~2 s for initdb). Every cluster of a session so shares one system
  identifier: each test gets its own archive home.
* archive_command and restore_command are small shell scripts in the cluster's directory that log each
  call (pid and file), then `exec` the CLI: the logged pid is the push process itself, which a test can
  SIGKILL. `wal_keep_size` keeps archived segments in pg_wal, so a test compares what was stored with
  PostgreSQL's own file (`wal_file`), whichever call archived it.
* Teardown always stops the server (`pg_ctl stop -m immediate`), ends the prefetchers the recovery
  started (by the pid in their spool's lock file, after checking its command line) and removes the
  directory, whether the test passed or not.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.ports import free_port

PG_BIN = Path(os.environ.get("EQUISPLIT_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
PROJECT = Path(__file__).resolve().parents[2]
SEGMENT_SIZE = 1 << 20

ARCHIVE_SCRIPT = """#!/bin/sh
# archive_command: log the call, then push.
echo "$$ $1" >> "{calls}"
exec {python} -m app.cli.entry wal push "$1"
"""
RESTORE_SCRIPT = """#!/bin/sh
# restore_command: log the call, then fetch.
echo "$$ $1 $2" >> "{calls}"
exec {python} -m app.cli.entry wal fetch "$1" "$2"
"""


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *command] if os.geteuid() == 0 else command


def run_as_postgres(
    *command: str, timeout: float = 60, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(_as_postgres(list(command)), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{command} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, PG_USER, PG_USER)
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                shutil.chown(os.path.join(root, name), PG_USER, PG_USER)


@dataclass(frozen=True)
class PythonForPostgres:
    """The interpreter archive_command runs, and the PYTHONPATH it needs."""

    executable: str
    pythonpath: str


@functools.cache
def python_for_postgres() -> PythonForPostgres:
    """sys.executable if `postgres` can run it with our packages; else a system python3 of the same
    minor version with the venv's site-packages; pytest.fail naming both attempts otherwise."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = sysconfig.get_paths()["purelib"]
    candidates = [
        PythonForPostgres(sys.executable, str(PROJECT)),
        *(
            PythonForPostgres(path, f"{PROJECT}:{site_packages}")
            for path in (f"/usr/bin/{version}", f"/usr/local/bin/{version}")
            if os.access(path, os.X_OK)
        ),
    ]
    tried = []
    for candidate in candidates:
        probe = _as_postgres(
            [
                "env",
                "-i",
                f"PYTHONPATH={candidate.pythonpath}",
                candidate.executable,
                "-c",
                "import app.cli.main",
            ]
        )
        proc = subprocess.run(probe, capture_output=True, text=True, timeout=120, cwd="/")
        if proc.returncode == 0:
            return candidate
        tried.append(f"{candidate.executable}: {(proc.stderr or proc.stdout).strip()[-300:]}")
    pytest.fail(
        f"no Python the {PG_USER} user can run with equisplit-dr's packages; tried:\n" + "\n".join(tried),
        pytrace=False,
    )


@pytest.fixture(scope="session")
def pg_template() -> Iterator[Path]:
    """A data directory made by `initdb --wal-segsize=1` once per session, owned by `postgres`."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL 15 binaries are not at {PG_BIN}: set EQUISPLIT_TEST_PG_BIN", pytrace=False)
    base = Path(tempfile.mkdtemp(prefix="eqdr-pgtemplate-", dir="/tmp"))
    try:
        base.chmod(0o755)
        chown_to_postgres(base)
        data = base / "data"
        run_as_postgres(
            str(PG_BIN / "initdb"), "-D", str(data), "--wal-segsize=1", "--auth=trust", "-U", PG_USER,
            "--no-sync", "-E", "UTF8", "--locale=C", timeout=180,
        )  # fmt: skip
        yield data
    finally:
        shutil.rmtree(base, ignore_errors=True)


class PgCluster:
    """One running PostgreSQL 15 cluster in its own directory under /tmp, archiving through our CLI."""

    def __init__(self, base: Path, port: int, env: dict[str, str]) -> None:
        self.base = base
        self.port = port
        self.env = env
        self.data = base / "data"
        self.log = base / "server.log"
        self.archive_calls = base / "archive-calls"
        self.restore_calls = base / "restore-calls"
        self.archive_script = base / "archive.sh"
        self.restore_script = base / "restore.sh"
        self.running = False

    @classmethod
    @contextlib.contextmanager
    def create(
        cls, template: Path, env: dict[str, str], *, archive: bool = True, **settings: str
    ) -> Iterator[PgCluster]:
        """A started cluster copied from `template`; stopped and removed at exit, always.

        `env` is the server's whole environment (PATH and PYTHONPATH are added). `archive=False` leaves
        archive_command empty: PostgreSQL then keeps WAL files `.ready` until it is set.
        """
        base = Path(tempfile.mkdtemp(prefix="eqdr-pg-", dir="/tmp"))
        python = python_for_postgres()
        cluster = cls(base, free_port(), {**env, "PATH": "/usr/bin:/bin", "PYTHONPATH": python.pythonpath})
        try:
            base.chmod(0o755)
            subprocess.run(["cp", "-a", str(template), str(cluster.data)], check=True)
            (base / "sock").mkdir()
            for script, text in (
                (cluster.archive_script, ARCHIVE_SCRIPT),
                (cluster.restore_script, RESTORE_SCRIPT),
            ):
                calls = cluster.archive_calls if script == cluster.archive_script else cluster.restore_calls
                script.write_text(text.format(calls=calls, python=python.executable))
                script.chmod(0o755)
            chown_to_postgres(base)
            conf = {
                "listen_addresses": "'127.0.0.1'",
                "port": str(cluster.port),
                "unix_socket_directories": f"'{base / 'sock'}'",
                "archive_mode": "on",
                "archive_command": f"'{cluster.archive_script} %p'" if archive else "''",
                "wal_keep_size": "'64MB'",
                "fsync": "off",
                "max_wal_senders": "0",
                "wal_level": "replica",
                **settings,
            }
            with open(cluster.data / "postgresql.conf", "a") as file:
                file.writelines(f"{key} = {value}\n" for key, value in conf.items())
            cluster.start()
            yield cluster
        finally:
            cluster.teardown()

    # Server --------------------------------------------------------------------------------------------

    def _pg_ctl(
        self, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        environment = [f"{key}={value}" for key, value in self.env.items()]
        command = ["env", "-i", *environment, str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args]
        return run_as_postgres(*command, timeout=timeout, check=check)

    def start(self) -> None:
        proc = self._pg_ctl("-l", str(self.log), "-w", "-t", "60", "start", check=False)
        self.running = True  # even a failed start may leave a postmaster for teardown to stop
        if proc.returncode != 0:
            raise AssertionError(
                f"pg_ctl start exited {proc.returncode}; server log:\n{self.server_log()[-4000:]}"
            )

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "-w", "stop")
        self.running = False

    def teardown(self) -> None:
        try:
            if self.running or (self.data / "postmaster.pid").exists():
                self._pg_ctl("-m", "immediate", "-w", "stop", check=False)
                self.running = False
            stop_prefetchers(self.base)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def server_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # SQL ---------------------------------------------------------------------------------------------

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=PG_USER,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        )

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            cursor = conn.execute(query.encode(), params or None)
            return cursor.fetchall() if cursor.description else []

    def configure(self, **settings: str) -> None:
        """ALTER SYSTEM each setting and reload."""
        with self.connect() as conn:
            for key, value in settings.items():
                conn.execute(f"ALTER SYSTEM SET {key} = {value}".encode())
            conn.execute(b"SELECT pg_reload_conf()")

    def switch_wal(self) -> str:
        """Write a little WAL, close the segment; the name of the segment just completed."""
        with self.connect() as conn:
            conn.execute(b"CREATE TABLE IF NOT EXISTS filler (n int, pad text)")
            conn.execute(b"INSERT INTO filler SELECT g, repeat('x', 200) FROM generate_series(1, 200) g")
            row = conn.execute(b"SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None
        return str(row[0])

    def archiver(self) -> dict[str, Any]:
        with self.connect() as conn:
            cursor = conn.execute(b"SELECT * FROM pg_stat_archiver")
            row = cursor.fetchone()
            assert row is not None and cursor.description is not None
            return {column.name: value for column, value in zip(cursor.description, row, strict=True)}

    # Archiving -----------------------------------------------------------------------------------------

    def wal_file(self, name: str) -> bytes:
        """PostgreSQL's own copy of WAL file `name` (in pg_wal)."""
        return (self.data / "pg_wal" / name).read_bytes()

    def is_archived(self, name: str) -> bool:
        return (self.data / "pg_wal" / "archive_status" / f"{name}.done").exists()

    def wait_archived(self, *wal_names: str, timeout: float = 60) -> None:
        """Wait until PostgreSQL considers every file archived (its status file is `.done`)."""
        deadline = time.monotonic() + timeout
        while not all(self.is_archived(name) for name in wal_names):
            if time.monotonic() > deadline:
                pending = [name for name in wal_names if not self.is_archived(name)]
                raise AssertionError(
                    f"not archived within {timeout} s: {pending}\n{self.archiver()}\n{self.server_log()[-3000:]}"
                )
            time.sleep(0.05)

    def calls(self, which: str = "archive") -> list[tuple[int, str]]:
        """(pid, file) of each archive_command (or restore_command) call so far."""
        path = self.archive_calls if which == "archive" else self.restore_calls
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [(int(line.split()[0]), line.split()[1]) for line in lines if line.strip()]


def stop_prefetchers(base: Path) -> None:
    """Kill the prefetchers whose spool lies under `base`, by the pid in their lock file."""
    for lock in base.rglob(".equisplit-dr-spool/*/.lock"):
        try:
            pid = int(lock.read_text().strip() or 0)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
        except (OSError, ValueError):
            continue
        if b"app.wal.prefetch" in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class RecoveryArea:
    """A directory under /tmp the `postgres` user can reach, holding recovered clusters; at exit every
    server started in it is stopped and its prefetchers ended, whether the test passed or not."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="eqdr-recovered-", dir="/tmp"))
        self.base.chmod(0o755)
        self.count = 0

    def new_dir(self) -> Path:
        self.count += 1
        return self.base / f"target{self.count}"

    def connect(self, port: int) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1", port=port, user=PG_USER, dbname="postgres", autocommit=True, connect_timeout=10
        )

    def sql(self, port: int, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with self.connect(port) as conn:
            cursor = conn.execute(query.encode(), params or None)
            return cursor.fetchall() if cursor.description else []

    def stop_all(self) -> None:
        for data in self.base.iterdir():
            if (data / "postmaster.pid").exists():
                run_as_postgres(
                    str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop", check=False
                )
        stop_prefetchers(self.base)

    def close(self) -> None:
        try:
            self.stop_all()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def recovery_area() -> Iterator[RecoveryArea]:
    area = RecoveryArea()
    try:
        yield area
    finally:
        area.close()
