"""PostgreSQL backup benchmark: equisplit-dr against pgBackRest on the same database, in one run.

    python bench/pg_bench.py [--scale 50] [--random-mb 200] [--pgbench-seconds 30] [--repeat 1]
                             [--quiet-wait 120] [--workdir DIR] [--keep] [--json-out FILE] [--no-pgbackrest]

One throwaway PostgreSQL 15 cluster (16 MiB WAL segments, run as the `postgres` OS user) holds a pgbench
database (`pgbench -i -s SCALE`) and a table of deterministic random bytes (`--random-mb`), so the figures
are not all compression. The cluster is then stopped and copied: each tool gets its own phase on an
identical copy of it.

Each phase (pgBackRest first, then equisplit-dr; every timed step runs the tool's CLI in a subprocess and
records wall time and the child's CPU time from wait4):
  1. archive_command is set to this tool alone and reloaded; nothing else archives during the phase;
  2. full backup (--repeat N: N rounds, each into a new, empty repository; the fastest counts);
  3. pgbench for about --pgbench-seconds, the same transactions in both phases (--random-seed, -t N per
     client; N calibrated once before the copy); a row marks the PITR target time T after it, and
     another row commits after T;
  4. incremental backup, and the bytes it added to the repository (du -sb before and after);
  5. restore of that backup into an empty directory (N rounds); each restore is then started (untimed),
     recovered to its consistency point, and checked against the source's data at the backup;
  6. point-in-time recovery to T, end to end (N rounds): restore + WAL replay + promote, timed until the
     server accepts connections and is out of recovery; checked against the source's data at T;
  7. stored size (du -sb of the repository, WAL archive included).
Then, for equisplit-dr alone: `wal push` of real 16 MiB segments from the pgbench run, one process per
segment into a fresh local archive (median and p95); and the PITR of step 6 again with the repository
copied to S3 (moto's server on loopback). WAL fetch MB/s during recovery comes from the restore_command
of the recoveries in step 6 (local) and of the S3 one: segment bytes over the time recovery spent
inside restore_command.

Before anything is timed, the project is byte-compiled for each interpreter that runs it (as installing a
wheel does), so no process of ours compiles its modules from source (PYTHONDONTWRITEBYTECODE, or the
`postgres` user, who cannot write __pycache__ in the checkout).

Checks: the sums of pgbench_accounts, _tellers, _branches and _history, the md5 of the random table and
the marker rows must equal the source's at that point. Exit status 0 whatever the verdicts; 1 if
something broke (a command failed, a restore differed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
PROJECT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(PROJECT))

import psycopg  # noqa: E402
from run import Broke, Timed, cpu_busy_seconds, du_sb, fs_type, log, machine, run, sync, wait_for_quiet  # noqa: E402

from tests.support.pgcluster import (  # noqa: E402
    PG_BIN,
    PG_USER,
    chown_to_postgres,
    free_port,
    python_for_postgres,
    run_as_postgres,
    stop_prefetchers,
)

MARKER = ".equisplit-pgbench"
MB = 1_000_000
SOURCE = "bench"  # our source name and pgBackRest's stanza
ROW_BYTES = 1800  # random bytes per row: 4 rows a page, stored inline (under the TOAST threshold)
CLIENTS = 4
PGBENCH_SEED = 5
S3_REGION = "us-east-1"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAPGBENCH000000000",
    "AWS_SECRET_ACCESS_KEY": "pg-bench-secret-for-moto-only",
    "AWS_DEFAULT_REGION": S3_REGION,
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
WAL_NAME = re.compile(r"^[0-9A-F]{24}$")

# What a restore is checked against: the same queries on the source at that point.
STATE_SQL = {
    "accounts": "SELECT count(*), sum(abalance) FROM pgbench_accounts",
    "tellers": "SELECT count(*), sum(tbalance) FROM pgbench_tellers",
    "branches": "SELECT count(*), sum(bbalance) FROM pgbench_branches",
    "history": "SELECT count(*), coalesce(sum(delta), 0) FROM pgbench_history",
    "random": "SELECT count(*), md5(string_agg(md5(data), '' ORDER BY id)) FROM random_bytes",
    "marks": "SELECT coalesce(string_agg(note, ',' ORDER BY id), '') FROM bench_marks",
}


# --- small helpers ----------------------------------------------------------------------------------------


def pg_ctl_env(extra: dict[str, str] | None = None) -> list[str]:
    """`env -i` with what a server (and its archive/restore commands) needs, nothing of ours leaking in."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": python_for_postgres().pythonpath}
    env.update(extra or {})
    return ["env", "-i", *(f"{k}={v}" for k, v in env.items())]


def as_postgres(*command: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    try:
        return run_as_postgres(*command, timeout=timeout)
    except AssertionError as exc:
        raise Broke(str(exc)) from None


def timing_wrapper(path: Path, command: str, log_file: Path, args: str) -> Path:
    """A shell script that runs `command args`, appends `start end status file` to `log_file`, and exits
    with the command's status: how long each archive_command / restore_command call took, as PostgreSQL
    ran it."""
    path.write_text(
        "#!/bin/sh\n"
        's=$(date +%s.%N)\n'
        f"{command} {args}\n"
        "rc=$?\n"
        f'echo "$s $(date +%s.%N) $rc $1" >> "{log_file}"\n'
        "exit $rc\n"
    )
    path.chmod(0o755)
    log_file.touch()
    chown_to_postgres(path)
    chown_to_postgres(log_file)
    return path


def calls(log_file: Path) -> list[tuple[float, float, int, str]]:
    """(start, end, exit status, file) of each call a timing wrapper logged."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for line in log_file.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:
                found.append((float(parts[0]), float(parts[1]), int(parts[2]), Path(parts[3]).name))
    return found


def fetch_figures(log_file: Path, segment_size: int) -> dict[str, Any]:
    """WAL fetch during a recovery: segment bytes over the seconds recovery spent in restore_command."""
    fetched = [(end - start) for start, end, rc, name in calls(log_file) if rc == 0 and WAL_NAME.match(name)]
    misses = [(end - start) for start, end, rc, name in calls(log_file) if rc != 0 or not WAL_NAME.match(name)]
    seconds = sum(fetched)
    return {
        "segments": len(fetched),
        "seconds_in_restore_command": round(seconds, 3),
        "other_calls": len(misses),
        "other_calls_seconds": round(sum(misses), 3),
        "first_call_ms": round(fetched[0] * 1000, 1) if fetched else None,
        "median_call_ms": round(statistics.median(fetched) * 1000, 1) if fetched else None,
        "MBps": len(fetched) * segment_size / MB / seconds if seconds else None,
    }


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def pg_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def connect(port: int, timeout: int = 10) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host="127.0.0.1", port=port, user=PG_USER, dbname="postgres", autocommit=True, connect_timeout=timeout
    )


def state(port: int) -> dict[str, str]:
    """The figures a restore must reproduce, as text."""
    with connect(port) as conn:
        return {key: " ".join(str(v) for v in conn.execute(sql.encode()).fetchone() or ()) for key, sql in
                STATE_SQL.items()}


def tree_bytes(path: Path, exclude: str | None = None) -> int:
    total = du_sb(path)
    if exclude and (path / exclude).exists():
        total -= du_sb(path / exclude)
    return total


# --- PostgreSQL servers -----------------------------------------------------------------------------------


class Servers:
    """Every server this run started, stopped at the end whatever happened."""

    def __init__(self) -> None:
        self.data_dirs: list[Path] = []

    def start(self, data: Path, log_file: Path, env: dict[str, str] | None = None, options: str = "") -> None:
        """`pg_ctl start` without waiting (the caller watches), as `postgres`, in a clean environment."""
        self.data_dirs.append(data)
        command = [*pg_ctl_env(env), str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log_file), "-W"]
        if options:
            command += ["-o", options]
        as_postgres(*command, "start", timeout=120)

    def stop(self, data: Path, mode: str = "fast") -> None:
        if (data / "postmaster.pid").exists():
            run_as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "-t", "120", "stop",
                            check=False, timeout=180)
        with contextlib.suppress(ValueError):
            self.data_dirs.remove(data)

    def stop_all(self) -> None:
        for data in list(self.data_dirs):
            self.stop(data, "immediate")


def postmaster_alive(data: Path) -> bool:
    try:
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def wait_promoted(port: int, data: Path, log_file: Path, timeout: float = 3600) -> float:
    """Wait until the server on `port` accepts connections and is out of recovery; the time.perf_counter()
    of that moment. Broke if the server stops or the wait times out."""
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    while time.monotonic() < deadline:
        with contextlib.suppress(psycopg.OperationalError), connect(port, timeout=2) as conn:
            row = conn.execute(b"SELECT pg_is_in_recovery()").fetchone()
            if row is not None and row[0] is False:
                return time.perf_counter()
        if time.monotonic() - started > 5 and not postmaster_alive(data):
            tail = log_file.read_text(errors="replace")[-3000:] if log_file.exists() else ""
            raise Broke(f"the server in {data} stopped before it left recovery:\n{tail}")
        time.sleep(0.05)
    raise Broke(f"the server in {data} did not leave recovery within {timeout:.0f} s")


class Cluster:
    """The source cluster: initdb with default 16 MiB segments, as `postgres`, in the workdir."""

    def __init__(self, base: Path, servers: Servers, server_env: dict[str, str]) -> None:
        self.base = base
        self.data = base / "data"
        self.sock = base / "sock"
        self.log = base / "server.log"
        self.port = free_port()
        self.servers = servers
        self.server_env = server_env
        self.segment_size = 16 << 20

    def initdb(self) -> None:
        self.base.mkdir(parents=True)
        self.sock.mkdir()
        chown_to_postgres(self.base)
        as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "--auth=trust", "-U", PG_USER, "-E", "UTF8",
            "--locale=C", timeout=600,
        )  # fmt: skip
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.sock}'",
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": "'/bin/true'",  # loading is not archived; each phase sets its tool's
            "checkpoint_timeout": "'15min'",
        }
        with open(self.data / "postgresql.conf", "a") as conf_file:
            conf_file.writelines(f"{key} = {value}\n" for key, value in conf.items())

    def start(self) -> None:
        self.servers.start(self.data, self.log, self.server_env)
        deadline = time.monotonic() + 120
        while True:
            try:
                with connect(self.port, timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise Broke(f"the source cluster did not start:\n{self.log.read_text()[-3000:]}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.servers.stop(self.data)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with connect(self.port) as conn:
            cursor = conn.execute(query.encode(), params or None)
            return cursor.fetchall() if cursor.description else []

    def set_archive_command(self, command: str) -> None:
        with connect(self.port) as conn:
            conn.execute(f"ALTER SYSTEM SET archive_command = '{command}'".encode())
            conn.execute(b"SELECT pg_reload_conf()")
        time.sleep(0.2)

    def pgbench(self, *args: str, timeout: float = 7200) -> str:
        proc = as_postgres(
            str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, *args, "postgres",
            timeout=timeout,
        )  # fmt: skip
        return proc.stdout + proc.stderr

    def settle_archive(self, timeout: float = 900) -> str:
        """Close the current segment and wait until every WAL file is archived; the segment's name."""
        with connect(self.port) as conn:
            conn.execute(b"INSERT INTO bench_switch VALUES (1)")  # some WAL, so the switch closes a segment
            row = conn.execute(b"SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None
        name = str(row[0])
        status = self.data / "pg_wal" / "archive_status"
        deadline = time.monotonic() + timeout
        while not (status / f"{name}.done").exists() or any(status.glob("*.ready")):
            if time.monotonic() > deadline:
                archiver = self.sql("SELECT * FROM pg_stat_archiver")
                raise Broke(f"WAL not archived within {timeout:.0f} s ({name}); pg_stat_archiver {archiver}\n"
                            f"{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        return name


# --- the two tools ------------------------------------------------------------------------------------------


@dataclass
class Phase:
    """One tool's figures."""

    name: str
    steps: dict[str, Timed] = field(default_factory=dict)
    rounds: dict[str, list[float]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    def keep(self, key: str, timed: Timed) -> bool:
        """Keep the fastest round; True if this one is it."""
        self.rounds.setdefault(key, []).append(round(timed.wall, 2))
        if key not in self.steps or timed.wall < self.steps[key].wall:
            self.steps[key] = timed
            return True
        return False


class Ours:
    name = "equisplit-dr"
    key = "ours"

    def __init__(self, work: Path, cluster: Cluster) -> None:
        self.work = work
        self.cluster = cluster
        self.home = work / "eq"
        self.repo = self.home / "repo"
        self.python = python_for_postgres()
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("BACKUP_", "DATABASE_URL", "EQUISPLIT", "WAL_", "PITR_", "AWS_"))}
        self.env.update(EQUISPLIT_DR_HOME=str(self.home), COLUMNS="200")
        script = Path(sys.executable).parent / "equisplit-dr"
        self.cli = [str(script)] if script.exists() else [sys.executable, "-m", "app.cli.entry"]
        self.archive_log = work / "archive-equisplit-dr.log"
        self.archive_script = timing_wrapper(
            work / "archive-equisplit-dr.sh", f"{self.command_line()} wal push", self.archive_log, '"$1"')
        self.backup_ids: dict[str, str] = {}

    def command_line(self) -> str:
        """The CLI as the `postgres` user runs it (archive_command, restore_command)."""
        return f"PYTHONPATH={self.python.pythonpath} {self.python.executable} -m app.cli.entry"

    def version(self) -> str:
        rev = subprocess.run(["git", "-C", str(PROJECT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True).stdout.strip()
        return f"equisplit-dr from {PROJECT} ({rev or '?'}); archive/restore_command run {self.python.executable}"

    def archive_command(self) -> str:
        return f"{self.archive_script} %p"

    def server_env(self) -> dict[str, str]:
        return {"EQUISPLIT_DR_HOME": str(self.home), "EQUISPLIT_DR_SOURCE": SOURCE}

    def _run(self, *args: str, env: dict[str, str] | None = None) -> Timed:
        return run([*self.cli, *args], env or self.env, cwd=PROJECT)

    def init(self) -> None:
        self._run("init")
        dsn = f"host=127.0.0.1 port={self.cluster.port} user={PG_USER} dbname=postgres"
        self._run("source", "add", SOURCE, "--postgres", dsn, "--pgdata", str(self.cluster.data))
        chown_to_postgres(self.home)  # archive_command (as postgres) writes the catalog and repo/wal

    def reset(self) -> None:
        shutil.rmtree(self.home)
        self.init()

    def backup(self, kind: str) -> tuple[Timed, dict[str, Any]]:
        timed = self._run("backup", "run", "--source", SOURCE, "--type",
                          {"full": "full", "incr": "incremental"}[kind], "--json")
        info = json.loads(timed.stdout)
        if info.get("state") != "complete":
            raise Broke(f"equisplit-dr {kind} backup ended {info.get('state')}: {info}")
        self.backup_ids[kind] = info["id"]
        return timed, {k: info.get(k) for k in ("id", "files", "files_read", "bytes_read", "bytes_new",
                                                "bytes_stored")}

    def restore(self, target: Path) -> tuple[Timed, dict[str, Any]]:
        timed = self._run("restore", self.backup_ids["incr"], "--target", str(target), "--json")
        return timed, {}

    def prepare_verify(self, target: Path, fetch_script: Path) -> tuple[dict[str, str], str]:
        """Make a plain restore startable: recover to its consistency point with our restore_command."""
        with open(target / "postgresql.auto.conf", "a") as conf:
            conf.write(f"restore_command = '{fetch_script} %f %p'\nrecovery_target = 'immediate'\n"
                       "recovery_target_action = 'promote'\narchive_mode = 'off'\n")
        (target / "recovery.signal").touch()
        target.chmod(0o700)
        chown_to_postgres(target)
        return self.server_env(), ""

    def fetch_wrapper(self, path: Path, log_file: Path, target: Path) -> Path:
        return timing_wrapper(path, f"{self.command_line()} wal fetch", log_file, '"$1" "$2"')

    def pitr(self, target_time: datetime, target: Path, port: int, fetch_script: Path,
             env: dict[str, str] | None = None) -> tuple[Timed, dict[str, Any]]:
        timed = self._run(
            "dr", "recover", "--source", SOURCE, "--timestamp", iso(target_time), "--target", str(target),
            "--start", "--port", str(port), "--restore-command", f"{fetch_script} %f %p", "--json", env=env)
        info = json.loads(timed.stdout)
        if not info.get("success"):
            raise Broke(f"equisplit-dr dr recover did not succeed: {info.get('message')}")
        plan = info.get("plan", {})
        return timed, {"restore_s": info.get("restore_seconds"), "recovery_s": info.get("recovery_seconds"),
                       "rto_s": info.get("rto_seconds"), "reached": info.get("restored_timestamp"),
                       "backup": plan.get("backup", {}).get("id"), "wal_segments": plan.get("segments")}

    def stored(self) -> int:
        return du_sb(self.repo)

    def stored_parts(self) -> dict[str, int]:
        wal = du_sb(self.repo / "wal") if (self.repo / "wal").exists() else 0
        catalog = sum(p.stat().st_size for p in self.home.glob("catalog.sqlite3*"))
        return {"wal_archive": wal, "backups": self.stored() - wal, "catalog_not_counted": catalog}


class PgBackRest:
    name = "pgBackRest"
    key = "pgbackrest"

    def __init__(self, work: Path, cluster: Cluster, binary: str, cipher: bool, block: bool = False) -> None:
        self.base = work / "pgbackrest"
        self.repo = self.base / "repo"
        self.conf = self.base / "pgbackrest.conf"
        self.cluster = cluster
        self.binary = binary
        self.base.mkdir()
        for sub in ("log", "lock", "spool", "repo"):
            (self.base / sub).mkdir()
        lines = [
            "[global]",
            f"repo1-path={self.repo}",
            "repo1-retention-full=99",
            "process-max=2",
            "compress-type=zst",
            "start-fast=y",
            f"log-path={self.base / 'log'}",
            f"lock-path={self.base / 'lock'}",
            f"spool-path={self.base / 'spool'}",
            "log-level-console=warn",
            "log-level-file=info",
        ]
        if cipher:
            lines += ["repo1-cipher-type=aes-256-cbc", "repo1-cipher-pass=pg-bench-cipher-pass"]
        self.block = block
        if block:  # block incremental (a beta feature in 2.45) needs bundles
            lines += ["repo1-bundle=y", "repo1-block=y", "beta=y"]
        lines += [
            f"[{SOURCE}]",
            f"pg1-path={cluster.data}",
            f"pg1-port={cluster.port}",
            f"pg1-socket-path={cluster.sock}",
            f"pg1-user={PG_USER}",
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self.archive_log = work / "archive-pgbackrest.log"
        # pgBackRest's backup refuses an archive_command that does not contain "pgbackrest".
        self.archive_script = timing_wrapper(
            work / "pgbackrest-archive-push.sh", f"{self.command_line()} archive-push", self.archive_log, '"$1"')
        chown_to_postgres(self.base)

    def command_line(self) -> str:
        return f"{self.binary} --config={self.conf} --stanza={SOURCE}"

    def version(self) -> str:
        out = subprocess.run([self.binary, "version"], capture_output=True, text=True).stdout.strip()
        block = ", repo1-bundle=y, repo1-block=y (block incremental)" if self.block else ""
        return f"{out} (repo on local disk, process-max=2, compress-type=zst, start-fast=y{block})"

    def archive_command(self) -> str:
        return f"{self.archive_script} %p"

    def _run(self, *args: str) -> Timed:
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        prefix = [runuser, "-u", PG_USER, "--"] if os.geteuid() == 0 else []
        return run([*prefix, self.binary, f"--config={self.conf}", f"--stanza={SOURCE}", *args],
                   {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}, cwd=Path("/"))

    def init(self) -> None:
        self._run("stanza-create")

    def reset(self) -> None:
        shutil.rmtree(self.repo)
        self.repo.mkdir()
        chown_to_postgres(self.repo)
        self.init()

    def info(self) -> dict[str, Any]:
        doc = json.loads(self._run("info", "--output=json").stdout)
        return doc[0]["backup"][-1] if doc and doc[0].get("backup") else {}

    def backup(self, kind: str) -> tuple[Timed, dict[str, Any]]:
        timed = self._run("backup", f"--type={kind}")
        info = self.info()
        repo = info.get("info", {}).get("repository", {})
        return timed, {"label": info.get("label"), "size": info.get("info", {}).get("size"),
                       "delta": info.get("info", {}).get("delta"), "repo_size": repo.get("size"),
                       "repo_delta": repo.get("delta")}

    def _empty_target(self, target: Path) -> None:
        target.mkdir(mode=0o700)
        chown_to_postgres(target)

    def restore(self, target: Path) -> tuple[Timed, dict[str, Any]]:
        self._empty_target(target)
        fetch = self.fetch_wrapper(target.parent / f"{target.name}-fetch.sh",
                                   target.parent / f"{target.name}-fetch.log", target)
        timed = self._run("restore", f"--pg1-path={target}", "--type=immediate", "--target-action=promote",
                          "--archive-mode=off", f"--recovery-option=restore_command={fetch} %f \"%p\"")
        return timed, {}

    def prepare_verify(self, target: Path, fetch_script: Path) -> tuple[dict[str, str], str]:
        return {}, ""  # pgBackRest's restore wrote the recovery settings itself

    def fetch_wrapper(self, path: Path, log_file: Path, target: Path) -> Path:
        # archive-get checks that the server's directory is pg1-path
        return timing_wrapper(path, f"{self.command_line()} --pg1-path={target} archive-get", log_file,
                              '"$1" "$2"')

    def pitr_restore(self, target_time: datetime, target: Path, fetch_script: Path) -> Timed:
        self._empty_target(target)
        return self._run("restore", f"--pg1-path={target}", "--type=time", f"--target={pg_time(target_time)}",
                         "--target-action=promote", "--archive-mode=off",
                         f"--recovery-option=restore_command={fetch_script} %f \"%p\"")

    def stored(self) -> int:
        return du_sb(self.repo)

    def stored_parts(self) -> dict[str, int]:
        archive = du_sb(self.repo / "archive") if (self.repo / "archive").exists() else 0
        return {"wal_archive": archive, "backups": self.stored() - archive}


def supports_block_incremental(binary: str) -> bool:
    """Whether this pgBackRest has block incremental (`repo-block`, 2.45 and later)."""
    found = subprocess.run([binary, "help", "backup", "repo-block"], capture_output=True, text=True)
    return found.returncode == 0 and "block incremental" in found.stdout


def find_pgbackrest() -> str | None:
    found = shutil.which("pgbackrest")
    if found:
        return found
    log("pgbackrest is not on PATH: trying `apt-get install -y pgbackrest`")
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
        if subprocess.run(["apt-get", "install", "-y", "pgbackrest"], check=False, **quiet).returncode != 0:
            subprocess.run(["apt-get", "update"], check=False, **quiet)
            subprocess.run(["apt-get", "install", "-y", "pgbackrest"], check=False, **quiet)
    return shutil.which("pgbackrest")


# --- moto's S3 server ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def moto_server(work: Path) -> Iterator[str]:
    """`moto_server` on a free loopback port, in its own process (its CPU shows as `others`)."""
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        raise Broke(f"{binary} not found: `make setup` installs moto[server] with the test extras")
    port = free_port()
    with open(work / "moto.log", "wb") as out:
        proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, **S3_ENV})
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise Broke(f"moto_server did not start: {(work / 'moto.log').read_text()[-2000:]}") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def copy_repository(source_dir: Path, url: str) -> int:
    """Every object of our local repository into the storage at `url` (the format is the same on every
    backend); the bytes copied."""
    from app.storage.base import KINDS
    from app.storage.url import open_storage

    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    local, remote = open_storage(str(source_dir)), open_storage(url)
    try:
        total = 0
        for kind in sorted(KINDS):
            for info in list(local.list(kind)):
                data = local.get(kind, info.name)
                remote.put(kind, info.name, data)
                total += len(data)
        return total
    finally:
        local.close()
        remote.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --- the run ------------------------------------------------------------------------------------------------


def prepare_workdir(work: Path) -> None:
    if work.exists() and any(work.iterdir()):
        if not (work / MARKER).exists():
            raise SystemExit(f"{work} is not empty and not a previous pg_bench workdir; pick another")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    (work / MARKER).write_text("created by bench/pg_bench.py; deleted at its end unless --keep\n")
    for parent in [work, *work.parents]:  # `postgres` must reach the clusters and scripts below it
        if parent.stat().st_mode & 0o005 != 0o005:
            raise SystemExit(f"{parent} is not readable and searchable by others: the postgres user cannot "
                             "reach the workdir; pick another --workdir")


def load(cluster: Cluster, args: argparse.Namespace) -> dict[str, Any]:
    """pgbench -i, the random table, the helper tables, one calibration run; sizes."""
    started = time.perf_counter()
    cluster.pgbench("-i", "-s", str(args.scale), "-q")
    with connect(cluster.port) as conn:
        conn.execute(b"CREATE TABLE bench_marks (id serial PRIMARY KEY, note text NOT NULL, "
                     b"at timestamptz NOT NULL DEFAULT clock_timestamp())")
        conn.execute(b"CREATE TABLE bench_switch (n int)")
        conn.execute(b"CREATE TABLE random_bytes (id int PRIMARY KEY, data bytea NOT NULL)")
        conn.execute(b"ALTER TABLE random_bytes ALTER COLUMN data SET STORAGE EXTERNAL")
        rows = max(1, args.random_mb * MB // ROW_BYTES)
        rng = random.Random(args.seed)
        block = 4096  # rows per randbytes() call
        with conn.cursor() as cur, cur.copy(b"COPY random_bytes (id, data) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "bytea"])
            for first in range(0, rows, block):
                count = min(block, rows - first)
                chunk = rng.randbytes(count * ROW_BYTES)
                for i in range(count):
                    copy.write_row((first + i + 1, chunk[i * ROW_BYTES:(i + 1) * ROW_BYTES]))
        conn.execute(b"VACUUM ANALYZE random_bytes")
    loaded = time.perf_counter() - started
    if args.pgbench_transactions:
        per_client = args.pgbench_transactions
    else:
        out = cluster.pgbench("-T", "3", "-c", str(CLIENTS), "-j", "2", f"--random-seed={PGBENCH_SEED + 1}")
        found = re.search(r"tps = ([0-9.]+)", out)
        tps = float(found.group(1)) if found else 100.0
        per_client = max(20, round(tps * args.pgbench_seconds / CLIENTS))
        log(f"  calibration: {tps:.0f} tps with {CLIENTS} clients; each phase runs {per_client} transactions "
            f"per client (about {args.pgbench_seconds} s)")
    cluster.sql("CHECKPOINT")
    sizes = {name: int(size) for name, size in cluster.sql(
        "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relname IN "
        "('pgbench_accounts', 'pgbench_history', 'random_bytes')")}
    return {"load_s": loaded, "per_client": per_client, "relation_bytes": sizes,
            "database_bytes": int(cluster.sql("SELECT pg_database_size('postgres')")[0][0])}


def run_phase(tool: Any, cluster: Cluster, servers: Servers, work: Path, args: argparse.Namespace,
              per_client: int, segments_dir: Path | None) -> Phase:
    phase = Phase(tool.name)
    figs = phase.figures
    restores = work / f"restores-{tool.key}"
    restores.mkdir()
    chown_to_postgres(restores)

    def quiet() -> None:
        sync()
        if args.quiet_wait:
            wait_for_quiet(args.quiet_wait)

    def timed_line(what: str, t: Timed, extra: str = "") -> None:
        log(f"  {tool.name:<13} {what:<22} {t.wall:7.2f} s wall, {t.cpu:6.2f} s CPU ({t.cores:.2f} cores; "
            f"others {t.others:.2f}){extra}")

    log(f"\n=== {tool.name}: archive_command is {tool.name} alone for this phase ===")
    tool.init()
    cluster.set_archive_command(tool.archive_command())
    cluster.settle_archive()

    source_bytes = tree_bytes(cluster.data, "pg_wal")
    figs["source_bytes"] = source_bytes
    log(f"[full backup] data directory without pg_wal: {source_bytes / MB:.1f} MB")
    for r in range(args.repeat):
        if r:
            tool.reset()
            cluster.settle_archive()
        before = tool.stored()
        quiet()
        timed, info = tool.backup("full")
        sync()
        added = tool.stored() - before
        if phase.keep("full", timed):
            figs["full"] = {**info, "repo_bytes_added": added}
        timed_line(f"full backup #{r + 1}", timed, f"; repo +{added / MB:.1f} MB {info}")

    log(f"[pgbench] {per_client} transactions per client, {CLIENTS} clients, --random-seed={PGBENCH_SEED}")
    lsn_start = cluster.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
    started = time.perf_counter()
    cluster.pgbench("-c", str(CLIENTS), "-j", "2", "-t", str(per_client), f"--random-seed={PGBENCH_SEED}")
    figs["pgbench_s"] = round(time.perf_counter() - started, 2)
    lsn_end = cluster.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
    cluster.sql("INSERT INTO bench_marks (note) VALUES ('target')")
    target_time = cluster.sql("SELECT clock_timestamp()")[0][0]
    at_target = state(cluster.port)
    time.sleep(0.3)
    cluster.sql("INSERT INTO bench_marks (note) VALUES ('after')")  # recovery needs a commit past the target
    cluster.settle_archive()
    wal_bytes = (int(lsn_end[8:], 16) - int(lsn_start[8:], 16) + 1) * cluster.segment_size
    figs["pgbench_wal_segments"] = f"{lsn_start} .. {lsn_end}"
    log(f"  pgbench ran {figs['pgbench_s']:.1f} s, WAL {lsn_start} .. {lsn_end} (~{wal_bytes / MB:.0f} MB); "
        f"PITR target {iso(target_time)}")
    if segments_dir is not None:  # segments written by pgbench alone, for the `wal push` figure
        segments_dir.mkdir()
        written = [p for p in sorted((cluster.data / "pg_wal").iterdir())
                   if WAL_NAME.match(p.name) and lsn_start <= p.name <= lsn_end]
        inner = [p for p in written if lsn_start < p.name < lsn_end]  # all pgbench's, start to end
        for path in inner if len(inner) >= 3 else written:
            shutil.copyfile(path, segments_dir / path.name)
        log(f"  kept {len(list(segments_dir.iterdir()))} segments written by pgbench for the push figure")

    at_incr = state(cluster.port)
    before = tool.stored()
    quiet()
    timed, info = tool.backup("incr")
    sync()
    added = tool.stored() - before
    phase.keep("incr", timed)
    figs["incr"] = {**info, "repo_bytes_added": added}
    timed_line("incremental backup", timed, f"; repo +{added / MB:.1f} MB {info}")

    for r in range(args.repeat):
        target = restores / f"restore{r + 1}"
        quiet()
        timed, _ = tool.restore(target)
        sync()
        restored = tree_bytes(target)
        best = phase.keep("restore", timed)
        if best:
            figs["restore_bytes"] = restored
        timed_line(f"restore #{r + 1}", timed, f"; {restored / MB:.1f} MB")
        fetch = tool.fetch_wrapper(restores / f"verify{r + 1}-fetch.sh", restores / f"verify{r + 1}-fetch.log",
                                   target)
        env, _ = tool.prepare_verify(target, fetch)
        port = free_port()
        server_log = restores / f"restore{r + 1}.log"
        servers.start(target, server_log, env, f"-p {port} -c unix_socket_directories='{target}'")
        wait_promoted(port, target, server_log)
        check(state(port), at_incr, f"{tool.name}'s restore #{r + 1} (recovered to its consistency point)")
        servers.stop(target, "immediate")
        stop_prefetchers(restores)
        log("    verified: equal to the source at the incremental backup")
    # Deleted after the last round, not between rounds (see alternate_restores).
    for r in range(args.repeat):
        shutil.rmtree(restores / f"restore{r + 1}")

    for r in range(args.repeat):
        timed, info, fetched = pitr(tool, target_time, at_target, restores, f"pitr{r + 1}", servers, None,
                                    quiet, cluster.segment_size)
        if phase.keep("pitr", timed):
            figs["pitr"] = {**info, "fetch": fetched}
        timed_line(f"PITR #{r + 1}", timed, f"; {info}; WAL fetch {fetched}")

    figs["stored"] = tool.stored()
    figs["stored_parts"] = tool.stored_parts()
    log(f"[stored] {figs['stored'] / MB:.1f} MB: " + ", ".join(f"{k} {v / MB:.1f} MB" for k, v in
                                                               figs["stored_parts"].items()))
    archived = [end - start for start, end, rc, name in calls(tool.archive_log) if rc == 0 and WAL_NAME.match(name)]
    if archived:
        figs["archive_command_ms"] = {"calls": len(archived), "median": statistics.median(archived) * 1000,
                                      "p95": percentile(archived, 0.95) * 1000}
    figs["target_time"] = iso(target_time)
    figs["at_target"] = at_target
    phase.figures["_target_time"] = target_time
    return phase


def check(got: dict[str, str], expected: dict[str, str], what: str) -> None:
    differ = {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
    if differ:
        raise Broke(f"{what} differs from the source: " + "; ".join(f"{k}: got {a!r}, expected {b!r}"
                                                                   for k, (a, b) in differ.items()))


def pitr(tool: Any, target_time: datetime, expected: dict[str, str], area: Path, label: str, servers: Servers,
         env: dict[str, str] | None, quiet: Callable[[], None], segment_size: int
         ) -> tuple[Timed, dict[str, Any], dict[str, Any]]:
    """Point-in-time recovery to `target_time`, end to end; verified against `expected`."""
    target = area / label
    port = free_port()
    fetch_log = area / f"{label}-fetch.log"
    fetch = tool.fetch_wrapper(area / f"{label}-fetch.sh", fetch_log, target)
    quiet()
    busy0 = cpu_busy_seconds()
    if isinstance(tool, Ours):
        servers.data_dirs.append(target)  # dr recover leaves it running: stopped below or at the end
        timed, info = tool.pitr(target_time, target, port, fetch, env)
    else:
        started = time.perf_counter()
        restored = tool.pitr_restore(target_time, target, fetch)
        server_log = area / f"{label}.log"
        start_at = time.perf_counter()
        servers.start(target, server_log, {}, f"-p {port} -c unix_socket_directories='{target}'")
        done = wait_promoted(port, target, server_log)
        wall = done - started
        # CPU: the restore command's; the server's own replay is in `machine CPU` below, for both tools
        timed = Timed(wall, restored.user, restored.sys, restored.maxrss_mib, restored.stdout, restored.stderr,
                      restored.others)
        info = {"restore_s": round(restored.wall, 2), "recovery_s": round(done - start_at, 2)}
    info["machine_cpu_s"] = round(cpu_busy_seconds() - busy0, 2)
    check(state(port), expected, f"{tool.name}'s point-in-time recovery ({label})")
    servers.stop(target, "immediate")
    stop_prefetchers(area)
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(Path(f"{target}_tablespaces"), ignore_errors=True)
    return timed, info, fetch_figures(fetch_log, segment_size)


def bench_push(ours: Ours, segments: list[Path], work: Path) -> dict[str, Any]:
    """One `wal push pg_wal/NAME` process per real 16 MiB segment into a fresh local archive, run the
    way PostgreSQL's archiver runs it: each segment is in pg_wal beforehand and marked `.ready` just
    before its call (0.2 s apart, as PostgreSQL writes the next one meanwhile), `.done` after. The first
    call pushes its segment itself and becomes the pusher (docs/WAL.md section 3); it is reported apart."""
    home = work / "push-home"
    env = {**ours.env, "EQUISPLIT_DR_HOME": str(home)}
    run([*ours.cli, "init"], env, cwd=PROJECT)
    run([*ours.cli, "source", "add", "pushbench", "--postgres", "host=127.0.0.1 dbname=none"], env, cwd=PROJECT)
    pgdata = work / "push-pgdata"
    status = pgdata / "pg_wal" / "archive_status"
    status.mkdir(parents=True, exist_ok=True)
    for path in segments:
        shutil.copyfile(path, pgdata / "pg_wal" / path.name)
    took = []
    for path in segments:
        time.sleep(0.2)
        (status / f"{path.name}.ready").touch()
        timed = run([*ours.cli, "wal", "push", f"pg_wal/{path.name}", "--source", "pushbench"], env, cwd=pgdata)
        took.append(timed.wall)
        os.rename(status / f"{path.name}.ready", status / f"{path.name}.done")
    first, rest = took[0], took[1:] or took
    stored = du_sb(home / "repo" / "wal")
    raw = sum(p.stat().st_size for p in segments)
    return {"segments": len(took), "median_ms": statistics.median(rest) * 1000,
            "p95_ms": percentile(rest, 0.95) * 1000, "first_ms": first * 1000,
            "all_ms": [round(t * 1000) for t in took], "compression": raw / stored if stored else None}


def compile_bytecode(ours: Ours) -> None:
    """Byte-compile the project for each interpreter that runs it, as installing a wheel does: run from
    a checkout under PYTHONDONTWRITEBYTECODE (or as `postgres`, who cannot write __pycache__ here),
    every process of ours compiled ~100 modules from source again, ~0.25 CPU s each (the CLI, its
    fork server, each archive_command)."""
    packages = [str(PROJECT / name) for name in ("app", "tasks", "workers") if (PROJECT / name).is_dir()]
    for executable in dict.fromkeys([sys.executable, ours.python.executable]):
        subprocess.run([executable, "-m", "compileall", "-q", *packages], check=True, capture_output=True)
    log(f"byte-compiled {', '.join(Path(p).name for p in packages)} for {', '.join(dict.fromkeys([sys.executable, ours.python.executable]))}")


def benchmark(args: argparse.Namespace, servers: Servers) -> dict[str, Any]:
    work = args.workdir.resolve()
    prepare_workdir(work)
    try:
        python_for_postgres()
    except BaseException as exc:  # pytest.fail's exception is a BaseException
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise Broke(str(exc)) from None
    binary = None if args.no_pgbackrest else find_pgbackrest()
    if not args.no_pgbackrest and binary is None:
        log("*** pgbackrest is not available: the pgBackRest half of the benchmark is SKIPPED ***")

    cluster = Cluster(work / "pg", servers, {})
    ours = Ours(work, cluster)
    cluster.server_env = ours.server_env()
    block = binary is not None and not args.no_pgbackrest_block and supports_block_incremental(binary)
    tools: list[Any] = [PgBackRest(work, cluster, binary, args.pgbackrest_cipher, block)] if binary else []
    tools.append(ours)
    log(f"machine: {machine()}; workdir {work} on {fs_type(work)}")
    compile_bytecode(ours)
    for tool in tools:
        log(f"tool: {tool.version()}")
    log(f"PostgreSQL: {subprocess.run([str(PG_BIN / 'postgres'), '--version'], capture_output=True, text=True).stdout.strip()}")

    log(f"\n[load] initdb (16 MiB WAL segments), pgbench -i -s {args.scale}, {args.random_mb} MB of random bytes "
        f"(seed {args.seed})")
    cluster.initdb()
    cluster.start()
    loaded = load(cluster, args)
    log(f"  loaded in {loaded['load_s']:.1f} s: database {loaded['database_bytes'] / MB:.1f} MB; "
        + ", ".join(f"{k} {v / MB:.1f} MB" for k, v in sorted(loaded["relation_bytes"].items())))
    snapshot = work / "pg" / "data-snapshot"
    if len(tools) > 1:
        log("  stopping the cluster and copying it: each phase starts from the same bytes")
        cluster.stop()
        subprocess.run(["cp", "-a", str(cluster.data), str(snapshot)], check=True)
        cluster.start()

    phases: dict[str, Phase] = {}
    segments_dir = work / "segments"
    for index, tool in enumerate(tools):
        if index:
            cluster.stop()
            shutil.rmtree(cluster.data)
            snapshot.rename(cluster.data)
            cluster.start()
        phases[tool.key] = run_phase(tool, cluster, servers, work, args, loaded["per_client"],
                                     segments_dir if tool is ours else None)

    if len(tools) > 1 and args.alternate:
        alternate_restores(tools, phases, work, args)

    log("\n=== equisplit-dr alone: `wal push` latency, and PITR from S3 ===")
    segments = sorted(segments_dir.iterdir())[: args.push_segments]
    if not segments:
        raise Broke("pgbench wrote no whole WAL segment to time `wal push` with: raise --pgbench-seconds")
    push = bench_push(ours, segments, work)
    log(f"[wal push] {push['segments']} segments, one process each as the archiver runs it, local storage: "
        f"median {push['median_ms']:.0f} ms, p95 {push['p95_ms']:.0f} ms after the first call "
        f"({push['first_ms']:.0f} ms: it pushes itself and becomes the pusher); all {push['all_ms']}; compression "
        f"{push['compression']:.1f}:1")
    phases[ours.key].figures["push"] = push

    if not args.no_s3:
        with moto_server(work) as endpoint:
            import boto3

            bucket = "pgbench"
            client = boto3.session.Session(
                aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"], aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
                region_name=S3_REGION).client("s3", endpoint_url=endpoint)
            client.create_bucket(Bucket=bucket)
            url = f"s3://{bucket}/repo?endpoint_url={endpoint}&region={S3_REGION}"
            started = time.perf_counter()
            copied = copy_repository(ours.repo, url)
            log(f"[S3] copied our repository ({copied / MB:.1f} MB) to moto's server in "
                f"{time.perf_counter() - started:.1f} s")
            env = {**ours.env, **S3_ENV, "BACKUP_STORAGE_URL": url}
            area = work / "restores-s3"
            area.mkdir()
            chown_to_postgres(area)
            figs = phases[ours.key].figures

            def quiet() -> None:
                sync()
                if args.quiet_wait:
                    wait_for_quiet(args.quiet_wait)

            timed, info, fetched = pitr(ours, figs["_target_time"], figs["at_target"], area, "pitr-s3", servers,
                                        env, quiet, cluster.segment_size)
            phases[ours.key].steps["pitr_s3"] = timed
            figs["pitr_s3"] = {**info, "fetch": fetched}
            log(f"  {ours.name:<13} {'PITR from S3':<22} {timed.wall:7.2f} s wall, {timed.cpu:6.2f} s CPU; {info}; "
                f"WAL fetch {fetched}")

    cluster.stop()
    return {"phases": phases, "loaded": loaded, "work": work}


def alternate_restores(tools: list[Any], phases: dict[str, Phase], work: Path, args: argparse.Namespace) -> None:
    """Restores of each tool's incremental backup in alternating order (A B, B A, ...), after both
    phases, so each pair runs under the same load of a shared machine; the ratio of each pair is kept
    (`restore_pairs`), and the median of them is the figure to trust when others load the machine."""
    log(f"\n=== restores of each tool's incremental, {args.alternate} rounds in alternating order ===")
    area = work / "restores-alternating"
    area.mkdir()
    chown_to_postgres(area)
    ours, theirs = tools[-1], tools[0]
    pairs: list[dict[str, float]] = []
    for r in range(args.alternate):
        got: dict[str, Timed] = {}
        for tool in (tools if r % 2 == 0 else tools[::-1]):
            target = area / f"{tool.key}{r + 1}"
            sync()
            if args.quiet_wait:
                wait_for_quiet(args.quiet_wait)
            timed, _ = tool.restore(target)
            got[tool.key] = timed
            log(f"  {tool.name:<13} restore, round {r + 1:<8} {timed.wall:7.2f} s wall, {timed.cpu:6.2f} s CPU "
                f"(others {timed.others:.2f} cores)")
        a, b = got[ours.key], got[theirs.key]
        pairs.append({"wall_ratio": b.wall / a.wall, "cpu_ratio": b.cpu / a.cpu if a.cpu else 0.0,
                      "ours_wall": a.wall, "theirs_wall": b.wall, "ours_cpu": a.cpu, "theirs_cpu": b.cpu,
                      "others": (a.others + b.others) / 2})
    # Every target is deleted only after the last round: ext4 makes creating files slow for a minute or
    # more after many were deleted, which would charge each restore for the deletion after the other's.
    shutil.rmtree(area)
    phases[ours.key].figures["restore_pairs"] = pairs
    log(f"  paired restore ratios ({theirs.name} / {ours.name}, > 1: ours faster): wall "
        f"{[round(p['wall_ratio'], 2) for p in pairs]}, median {statistics.median(p['wall_ratio'] for p in pairs):.2f}x;"
        f" CPU {[round(p['cpu_ratio'], 2) for p in pairs]}, median "
        f"{statistics.median(p['cpu_ratio'] for p in pairs):.2f}x")


def report(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    phases: dict[str, Phase] = data["phases"]
    ours, theirs = phases["ours"], phases.get("pgbackrest")

    def value(phase: Phase | None, key: str) -> float | None:
        if phase is None:
            return None
        s, f = phase.steps, phase.figures
        getters: dict[str, Callable[[], float | None]] = {
            "full_s": lambda: s["full"].wall,
            "full_mbps": lambda: f["source_bytes"] / MB / s["full"].wall,
            "full_cpu": lambda: s["full"].cpu,
            "incr_s": lambda: s["incr"].wall,
            "incr_mb": lambda: f["incr"]["repo_bytes_added"] / MB,
            "incr_own_mb": lambda: (f["incr"].get("bytes_stored") if "bytes_stored" in f["incr"]
                                    else f["incr"].get("repo_delta") or 0) / MB,
            "incr_cpu": lambda: s["incr"].cpu,
            "restore_s": lambda: s["restore"].wall,
            "restore_mbps": lambda: f["restore_bytes"] / MB / s["restore"].wall,
            "restore_cpu": lambda: s["restore"].cpu,
            "pitr_s": lambda: s["pitr"].wall,
            "pitr_restore_s": lambda: f["pitr"]["restore_s"],
            "pitr_recovery_s": lambda: f["pitr"]["recovery_s"],
            "pitr_machine_cpu": lambda: f["pitr"]["machine_cpu_s"],
            "stored_mb": lambda: f["stored"] / MB,
            "archive_ms": lambda: f.get("archive_command_ms", {}).get("median"),
            "push_median": lambda: f["push"]["median_ms"] if "push" in f else None,
            "push_p95": lambda: f["push"]["p95_ms"] if "push" in f else None,
            "fetch_local": lambda: f["pitr"]["fetch"]["MBps"],
            "fetch_misses_s": lambda: f["pitr"]["fetch"]["other_calls_seconds"],
            "fetch_s3": lambda: f["pitr_s3"]["fetch"]["MBps"] if "pitr_s3" in f else None,
            "pitr_s3_s": lambda: s["pitr_s3"].wall if "pitr_s3" in s else None,
        }
        return getters[key]()

    rows = [  # label, key, higher is better, target (None: info), absolute bound for ours
        ("full backup, s", "full_s", False, ">= 1.5x", None),
        ("  MB/s (data dir without pg_wal)", "full_mbps", True, None, None),
        ("  CPU s (tool's processes)", "full_cpu", False, None, None),
        ("incremental after pgbench, s", "incr_s", False, ">= 1.2x", None),
        ("  MB added to the repository (du)", "incr_mb", False, "< pgBackRest", None),
        ("  MB the backup itself stored (tool)", "incr_own_mb", False, None, None),
        ("  CPU s", "incr_cpu", False, None, None),
        ("restore, s", "restore_s", False, ">= 1.2x", None),
        ("  MB/s (restored directory)", "restore_mbps", True, None, None),
        ("  CPU s", "restore_cpu", False, None, None),
        ("PITR end to end, s", "pitr_s", False, None, None),
        ("  of which restore, s", "pitr_restore_s", False, None, None),
        ("  of which replay + promote, s", "pitr_recovery_s", False, None, None),
        ("  machine CPU s (server included)", "pitr_machine_cpu", False, None, None),
        ("stored, MB (backups + WAL)", "stored_mb", False, None, None),
        ("archive_command per call, median ms", "archive_ms", False, None, None),
        ("wal push 16 MiB, 1 process, median ms", "push_median", False, "< 300 ms", ("<", 300.0)),
        ("wal push 16 MiB, 1 process, p95 ms", "push_p95", False, "< 300 ms", ("<", 300.0)),
        ("WAL fetch in recovery, local, MB/s", "fetch_local", True, ">= 100 MB/s", (">=", 100.0)),
        ("  s in restore_command for misses", "fetch_misses_s", False, None, None),
        ("WAL fetch in recovery, S3 moto, MB/s", "fetch_s3", True, ">= 100 MB/s", (">=", 100.0)),
        ("PITR end to end from S3 (moto), s", "pitr_s3_s", False, None, None),
    ]
    loaded = data["loaded"]
    summary: dict[str, Any] = {"scale": args.scale, "random_mb": args.random_mb,
                               "pgbench_transactions_per_client": loaded["per_client"],
                               "database_bytes": loaded["database_bytes"], "metrics": {},
                               "restore_pairs": ours.figures.get("restore_pairs")}
    log("\n" + "=" * 112)
    log(f"RESULTS  pgbench scale {args.scale} + {args.random_mb} MB random bytes: database "
        f"{loaded['database_bytes'] / MB:.1f} MB; MB = 10^6 bytes; ratio > 1 means equisplit-dr is better")
    log("=" * 112)
    log(f"{'metric':<40}{'equisplit-dr':>13}{'pgBackRest':>12}{'ratio':>8}   {'target':<16}verdict")
    for label, key, higher, target, bound in rows:
        a, b = value(ours, key), value(theirs, key)
        ratio = None if a is None or b is None or a == 0 or b == 0 else (a / b if higher else b / a)
        verdict = ""
        if bound is not None and a is not None:
            op, limit = bound
            verdict = "PASS" if (a < limit if op == "<" else a >= limit) else "FAIL"
        elif target is not None and ratio is not None:
            if target.endswith("x"):  # a ratio to reach: ">= 1.5x"
                verdict = "PASS" if ratio >= float(target.split()[-1][:-1]) - 1e-9 else "FAIL"
            else:
                strict = target.startswith("<") and not target.startswith("<=")
                verdict = "PASS" if (ratio > 1 if strict else ratio >= 1 - 1e-9) else "FAIL"
        summary["metrics"][key] = {"ours": a, "pgbackrest": b, "ratio": ratio, "verdict": verdict}
        a_text = "-" if a is None else f"{a:.2f}"
        b_text = "-" if b is None else f"{b:.2f}"
        r_text = "-" if ratio is None else f"{ratio:.2f}x"
        log(f"{label:<40}{a_text:>13}{b_text:>12}{r_text:>8}   {target or '(info)':<16}{verdict}")
    for phase in (ours, theirs):
        if phase is None:
            continue
        log(f"\n{phase.name}:")
        for key, t in phase.steps.items():
            rounds = phase.rounds.get(key, [])
            log(f"  {key:<8} wall {t.wall:7.2f} s, CPU {t.cpu:6.2f} s (user {t.user:.2f}, sys {t.sys:.2f}), "
                f"others {t.others:.2f} cores, peak RSS {t.maxrss_mib:.0f} MiB"
                + (f"; rounds {rounds}" if len(rounds) > 1 else ""))
        for key, f in phase.figures.items():
            if not key.startswith("_") and key != "at_target":
                log(f"  {key:<8} {f}")
    summary["tools"] = {
        p.name: {"steps": {k: {"wall": t.wall, "cpu": t.cpu, "others": t.others, "maxrss_mib": t.maxrss_mib,
                               "rounds": p.rounds.get(k, [])} for k, t in p.steps.items()},
                 "figures": {k: v for k, v in p.figures.items() if not k.startswith("_")}}
        for p in (ours, theirs) if p is not None
    }
    log("\nNotes: each tool archived WAL alone during its own phase (archive_command switched and reloaded "
        "between phases, both phases on identical copies of the database and the same pgbench transactions), "
        "so each backup waits only for its own tool's archiving; archiving was let finish before every timed "
        "step. Both backups take an immediate checkpoint. Backups, restores and PITR time the tool's CLI; "
        "pgBackRest's PITR is `restore --type=time --target-action=promote --archive-mode=off`, then "
        "pg_ctl start, until the server accepts connections and is out of recovery; ours is `dr recover "
        "--start`, which does the same itself. CPU is the tool's own processes (wait4); the servers' replay "
        "shows in 'machine CPU'. WAL fetch MB/s: segment bytes over the seconds recovery spent in "
        "restore_command. equisplit-dr encrypts everything (AES-256-GCM); pgBackRest "
        + ("encrypts too (aes-256-cbc)." if args.pgbackrest_cipher else "does not, unless --pgbackrest-cipher."))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=50, help="pgbench scale (50: about 750 MB)")
    parser.add_argument("--random-mb", type=int, default=200, help="MB of random bytes in a table (default 200)")
    parser.add_argument("--pgbench-seconds", type=float, default=30,
                        help="about how long the pgbench run between the backups lasts (default 30)")
    parser.add_argument("--pgbench-transactions", type=int,
                        help="transactions per client instead of calibrating from --pgbench-seconds")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random table")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of the full backup (each into a new repository), the restore and the PITR; "
                        "each tool's fastest round counts (default 1)")
    parser.add_argument("--push-segments", type=int, default=16, help="segments for the `wal push` figure")
    parser.add_argument("--quiet-wait", type=float, default=120.0,
                        help="before each timed step, wait up to this many seconds for the CPUs to go idle")
    parser.add_argument("--workdir", type=Path, default=BENCH_DIR / "out" / "pg",
                        help="scratch space, deleted at the end unless --keep (default bench/out/pg)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir (clusters stopped)")
    parser.add_argument("--json-out", type=Path, help="also write the figures as JSON to this file")
    parser.add_argument("--no-pgbackrest", action="store_true", help="measure equisplit-dr alone")
    parser.add_argument("--pgbackrest-cipher", action="store_true",
                        help="encrypt pgBackRest's repository too (aes-256-cbc), as ours always is")
    parser.add_argument("--alternate", type=int, default=2,
                        help="after both phases, this many rounds of restores in alternating order (0: none)")
    parser.add_argument("--no-pgbackrest-block", action="store_true",
                        help="pgBackRest without block incremental (by default on where its version has it)")
    parser.add_argument("--no-s3", action="store_true", help="skip the PITR from S3 (moto)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat is at least 1")
    servers = Servers()
    work = args.workdir.resolve()
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        data = benchmark(args, servers)
        summary = report(data, args)
        if args.json_out:
            args.json_out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    except Broke as exc:
        log(f"\nBENCHMARK BROKE: {exc}")
        return 1
    except Exception:
        log(f"\nBENCHMARK BROKE:\n{traceback.format_exc()}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        servers.stop_all()
        if work.exists():
            stop_prefetchers(work)
        if not args.keep and (work / MARKER).exists():
            shutil.rmtree(work, ignore_errors=True)
            log(f"removed {work}")
        elif args.keep:
            log(f"kept {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
