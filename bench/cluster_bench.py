"""Cluster benchmark: one full backup of the bench tree spread over Celery workers on Redis (PostgreSQL
catalog), against one worker, against the in-process CLI; the broker/catalog overhead per unit; and the
latency of the `wal` queue while a big backup runs.

    python bench/cluster_bench.py [--scale 1.0] [--workdir DIR] [--keep] [--unit-mib 256] [--repeat 1]
                                  [--scenarios cli,a,b,c,d,wal,walshared] [--quiet-wait 60] [--no-calibrate]

Scenarios (each a full backup into a fresh repository and a fresh PostgreSQL database, so no dedup
carries over; workers are `celery -A workers worker -n wN@%h -c 1 -Q backup,chunks` subprocesses):
  cli        `equisplit-dr backup run --type full` in one process (threads, no Celery): the baseline;
  a          1 worker pinned to CPU 0 (`taskset -c 0`), BACKUP_THREADS=1;
  b          2 workers pinned to CPU 0 and CPU 1, BACKUP_THREADS=1 each (two one-core hosts);
  c          unpinned, 1 worker, BACKUP_THREADS=4 (one worker using both cores through its threads);
  d          unpinned, 2 workers, BACKUP_THREADS=2 each;
  wal        (d) again, plus a worker on `-Q wal` only, and a probe task enqueued on `wal` every 0.2 s;
  walshared  (d) again with the bulk workers also consuming `wal` and no dedicated wal worker.

The timed span of a cluster backup runs from `run_backup.delay(...)` to `.get()` returning the finalized
summary. Task timings come from Celery events (task-sent/received/started/succeeded, captured by this
process) and each unit's own row in the catalog table `backup_units`. See bench/README.md.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
PROJECT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(PROJECT))
import gen_tree  # noqa: E402
from run import cpu_busy_seconds, log, machine, sync  # noqa: E402

from tests.support.cluster import RedisServer  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

MB = 1_000_000
MiB = 1 << 20
MARKER = ".equisplit-cluster-bench"
TREE_INFO = "tree.json"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
UNIT_TASK = "tasks.backup.backup_unit"
PLAN_TASK = "tasks.backup.run_backup"
FINAL_TASK = "tasks.backup.finalize_backup"
PROBE_TASK = "tasks.wal.archive_check"
BULK_QUEUES = "backup,chunks"

# Targets (from the issue)
TARGET_SPEEDUP = 1.7
TARGET_SPREAD_NOISE = 0.05
TARGET_OVERHEAD = 0.05
TARGET_WAL_P95 = 1.0


class Broke(Exception):
    """Something failed that makes the figures worthless."""


# --- machine -----------------------------------------------------------------------------------------


def cpu_of_pids(pids: set[int]) -> dict[int, float]:
    """CPU seconds (user + system) of each of these live processes."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                rest = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(rest[11]) + int(rest[12])) / tick
    return out


def cpu_of_groups(pgids: set[int]) -> float:
    """CPU seconds (user + system) of the live processes in these process groups."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                rest = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(rest[2]) in pgids:  # field 5: pgrp; fields 14/15: utime, stime
            total += int(rest[11]) + int(rest[12])
    return total / tick


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def wait_for_quiet(limit: float, threshold: float = 0.25) -> float:
    """Wait (at most `limit` s) until other processes use less than `threshold` cores for a second."""
    waited = 0.0
    busy = 0.0
    while limit > 0:
        before = cpu_busy_seconds()
        time.sleep(1.0)
        busy = cpu_busy_seconds() - before
        if busy < threshold or waited >= limit:
            break
        if waited == 0:
            log(
                f"  the machine is busy ({busy:.2f} cores used by other processes): waiting up to {limit:.0f} s"
            )
        waited += 1.0
    if waited and busy >= threshold:
        log(f"  still busy ({busy:.2f} cores) after {waited:.0f} s: measuring anyway (see 'others')")
    return busy




def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


# --- the tree ----------------------------------------------------------------------------------------


def prepare_workdir(work: Path) -> None:
    """A workdir this script made (marker) may be reused: its tree is kept, everything else removed."""
    if work.exists() and any(work.iterdir()):
        if not (work / MARKER).exists():
            raise SystemExit(
                f"{work} is not empty and not a previous cluster benchmark's workdir; pick another"
            )
        for child in work.iterdir():
            if child.name not in ("tree", TREE_INFO, MARKER):
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("created by bench/cluster_bench.py; deleted at its end unless --keep\n")


def ensure_tree(work: Path, scale: float, seed: int) -> tuple[Path, int, int, bool]:
    tree = work / "tree"
    info_path = work / TREE_INFO
    wanted = {"scale": scale, "seed": seed, "generator": "bench/gen_tree.py"}
    if tree.exists() and info_path.exists():
        info = json.loads(info_path.read_text())
        if {k: info.get(k) for k in wanted} == wanted:
            return tree, info["files"], info["bytes"], True
    if tree.exists():
        shutil.rmtree(tree)
    info_path.unlink(missing_ok=True)
    stats = gen_tree.generate(tree, scale, seed, log=lambda m: log("  " + m.strip()))
    info_path.write_text(json.dumps({**wanted, "files": stats.files, "bytes": stats.bytes}))
    return tree, stats.files, stats.bytes, False


def warm_cache(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb", buffering=0) as handle:
                while block := handle.read(4 << 20):
                    size += len(block)
            files += 1
    return files, size


# --- how well this machine's two CPUs scale, outside equisplit-dr ------------------------------------------

CALIBRATION = r"""
import os, sys, time
kind, duration = sys.argv[1], float(sys.argv[2])
n = 0
if kind == "python":
    end = time.perf_counter() + duration
    while time.perf_counter() < end:
        x = 0
        for i in range(20000):
            x += i * i
        n += 1
else:
    import blake3, zstandard
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    data = (b"2025-01-01,order,paid,42.00\n" * 20000)[:524288] + os.urandom(524288)
    z, aes, key = zstandard.ZstdCompressor(level=3), AESGCM(os.urandom(32)), os.urandom(32)
    end = time.perf_counter() + duration
    while time.perf_counter() < end:
        blake3.blake3(data, key=key).digest()
        aes.encrypt(os.urandom(12), z.compress(data), None)
        n += 1
print(n / duration)
"""


def calibrate(duration: float = 3.0) -> list[str]:
    """Rate of a pure-Python loop and of the data path's libraries (BLAKE3, zstd, AES-GCM on 1 MiB) on CPU 0
    alone, then on CPU 0 and CPU 1 at once: the speed-up two pinned processes can get on this machine."""
    lines = []
    for kind in ("python", "datapath"):

        def launch(cpu: int, kind: str = kind) -> subprocess.Popen[str]:
            return subprocess.Popen(
                ["taskset", "-c", str(cpu), sys.executable, "-c", CALIBRATION, kind, str(duration)],
                stdout=subprocess.PIPE,
                text=True,
            )

        busy0, t0 = cpu_busy_seconds(), time.monotonic()
        solo = float(launch(0).communicate()[0])
        pair = [launch(0), launch(1)]
        rates = [float(p.communicate()[0]) for p in pair]
        others = max(0.0, (cpu_busy_seconds() - busy0) - 3 * duration) / (time.monotonic() - t0)
        lines.append(
            f"  {kind:<9} CPU 0 alone {solo:8.1f}/s; CPU 0 + CPU 1 at once {rates[0]:8.1f}/s + {rates[1]:8.1f}/s "
            f"= {sum(rates) / solo:.2f}x one CPU (others ~{others:.2f} cores)"
        )
    return lines


def plan_preview(tree: Path, unit_bytes: int) -> tuple[float, list[str]]:
    """Walk the tree and split it into units as prepare_backup does, in this process: the walk's time
    (part of the serial plan phase) and the units' shapes."""
    from app.backup.plan import plan_reads, split_units
    from app.sources.files import walk_tree

    started = time.perf_counter()
    walk = walk_tree(tree)
    walk_s = time.perf_counter() - started
    to_read, _ = plan_reads(walk.entries, None)
    units = split_units(to_read, unit_bytes, guided=True)
    sizes = sorted(u.bytes for u in units)
    many = sum(1 for u in units if len(u.items) >= 1000)
    lines = [
        f"  walk_tree: {len(walk.entries)} entries in {walk_s:.2f} s (warm cache, in this process)",
        f"  {len(units)} units of {unit_bytes // MiB} MiB: sizes {sizes[0] / MiB:.1f} .. "
        f"{statistics.median(sizes) / MiB:.1f} (median) .. {sizes[-1] / MiB:.1f} MiB; {many} of them hold "
        f">= 1000 files (the small files), "
        f"{sum(len(u.items) for u in units if len(u.items) >= 1000)} files in all",
    ]
    return walk_s, lines


# --- redis, postgres ---------------------------------------------------------------------------------


class Postgres:
    """Fresh databases on the server of `admin_url`; every one made is dropped by drop_all()."""

    def __init__(self, admin_url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        from app.catalog.db import normalise_url

        self.server = make_url(normalise_url(admin_url))
        self.admin = create_engine(self.server, isolation_level="AUTOCOMMIT")
        self.made: list[str] = []

    def create(self) -> str:
        from sqlalchemy import text

        name = f"eqdr_cluster_bench_{secrets.token_hex(5)}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.made.append(name)
        return self.server.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        name = make_url(url).database
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if name in self.made:
            self.made.remove(name)

    def backend_pids(self, url: str) -> set[int]:
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        with self.admin.connect() as conn:
            rows = conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": make_url(url).database}
            )
            return {int(r[0]) for r in rows}

    def drop_all(self) -> None:
        for name in list(self.made):
            try:
                self.drop(self.server.set(database=name).render_as_string(hide_password=False))
            except Exception as exc:
                log(f"  could not drop database {name}: {exc}")
        self.admin.dispose()


class CpuMeter:
    """CPU used during a span by the workers (their process groups), this script, the PostgreSQL backends
    connected to the scenario's database, redis-server, and everything else on the machine (`others`)."""

    def __init__(self, bench: Bench, db_url: str, pgids: set[int]) -> None:
        self.bench, self.db_url, self.pgids = bench, db_url, pgids
        self.before: dict[str, Any] = {}

    def _snap(self) -> dict[str, Any]:
        pg = cpu_of_pids(self.bench.pg.backend_pids(self.db_url))
        redis_pid = self.bench.redis.process.pid if self.bench.redis.process else -1
        return {
            "busy": cpu_busy_seconds(),
            "workers": cpu_of_groups(self.pgids) if self.pgids else 0.0,
            "self": own_cpu(),
            "pg": pg,
            "redis": cpu_of_pids({redis_pid}).get(redis_pid, 0.0),
        }

    def start(self) -> None:
        self.before = self._snap()

    def stop(self, res: Result, external: float | None = None) -> None:
        after, b = self._snap(), self.before
        res.cpu_workers = external if external is not None else after["workers"] - b["workers"]
        res.cpu_self = after["self"] - b["self"]
        res.cpu_catalog = sum(v - b["pg"].get(pid, 0.0) for pid, v in after["pg"].items())
        res.cpu_broker = after["redis"] - b["redis"]
        ours = res.cpu_workers + res.cpu_self + res.cpu_catalog + res.cpu_broker
        res.others = max(0.0, (after["busy"] - b["busy"]) - ours) / res.seconds


# --- Celery events ------------------------------------------------------------------------------------


class EventRecorder(threading.Thread):
    """Captures every task event the workers (and this process, task-sent) publish."""

    def __init__(self, app: Any) -> None:
        super().__init__(daemon=True, name="event-recorder")
        self.app = app
        self.lock = threading.Lock()
        self.tasks: dict[str, list[dict[str, Any]]] = {}
        self.receiver: Any = None
        self.pinged = threading.Event()
        self.error: BaseException | None = None

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        if kind == "bench-ping":
            self.pinged.set()
            return
        if not kind.startswith("task-") or "uuid" not in event:
            return
        with self.lock:
            self.tasks.setdefault(event["uuid"], []).append(event)

    def run(self) -> None:
        try:
            with self.app.connection_for_read() as conn:
                self.receiver = self.app.events.Receiver(conn, handlers={"*": self.on_event})
                self.receiver.capture(limit=None, timeout=None, wakeup=False)
        except BaseException as exc:
            self.error = exc

    def wait_ready(self) -> None:
        with self.app.events.default_dispatcher() as dispatcher:
            for _ in range(200):
                dispatcher.send("bench-ping")
                if self.pinged.wait(0.1):
                    return
        raise Broke(f"the Celery event receiver got nothing ({self.error!r})")

    def take(self) -> list[dict[str, Any]]:
        with self.lock:
            tasks, self.tasks = self.tasks, {}
        return split_tasks(tasks)

    def started(self, uuid: str) -> bool:
        with self.lock:
            return any(e["type"] == "task-started" for e in self.tasks.get(uuid, []))

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.join(5)


def split_tasks(tasks: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One record per task execution: {uuid, name, sent, received, started, succeeded, failed: event}.
    One uuid can carry two tasks: `run_backup` replaces itself with the chord, whose body (finalize_backup)
    inherits its id."""
    records: list[dict[str, Any]] = []
    for uuid, events in tasks.items():
        current: dict[str, Any] | None = None
        for ev in sorted(events, key=lambda e: e["timestamp"]):
            kind, name = ev["type"][5:], ev.get("name")
            if current is None or kind in current or (name and current.get("name") not in (None, name)):
                current = {"uuid": uuid, "name": name}
                records.append(current)
            if name and not current.get("name"):
                current["name"] = name
            current[kind] = ev
    return records


# --- workers ---------------------------------------------------------------------------------------------


@dataclass
class WorkerSpec:
    name: str
    threads: int
    pin: int | None = None
    queues: str = BULK_QUEUES
    concurrency: int = 1

    def describe(self) -> str:
        where = f"pinned to CPU {self.pin}" if self.pin is not None else "unpinned"
        return f"{self.name}: -c {self.concurrency} -Q {self.queues}, BACKUP_THREADS={self.threads}, {where}"


class Workers:
    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.env = env
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.hostname = socket.gethostname()

    def start(self, specs: list[WorkerSpec]) -> None:
        for spec in specs:
            cmd = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers",
                "worker",
                "-n",
                f"{spec.name}@%h",
                "-c",
                str(spec.concurrency),
                "-Q",
                spec.queues,
                "--without-mingle",
                "--without-gossip",
                "-E",
                "--loglevel=INFO",
            ]
            if spec.pin is not None:
                cmd = ["taskset", "-c", str(spec.pin), *cmd]
            with open(self.log_of(spec.name), "wb") as out:
                self.procs[spec.name] = subprocess.Popen(
                    cmd,
                    env={**self.env, "BACKUP_THREADS": str(spec.threads)},
                    cwd=PROJECT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
        for spec in specs:
            self._wait_ready(spec.name)

    def log_of(self, name: str) -> Path:
        return self.logdir / f"{name}.log"

    def node(self, name: str) -> str:
        return f"{name}@{self.hostname}"

    def _wait_ready(self, name: str) -> None:
        proc, log_path = self.procs[name], self.log_of(name)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise Broke(f"worker {name} exited:\n{log_path.read_text(errors='replace')[-3000:]}")
            if b"ready." in log_path.read_bytes():
                return
            time.sleep(0.1)
        raise Broke(f"worker {name} not ready in 90 s:\n{log_path.read_text(errors='replace')[-3000:]}")

    def pgids(self) -> set[int]:
        return {p.pid for p in self.procs.values()}  # start_new_session: pgid == pid

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.procs.clear()

    def tails(self, lines: int = 30) -> str:
        out = []
        for path in sorted(self.logdir.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()
            out.append(f"--- {path.name}\n" + "\n".join(text[-lines:]))
        return "\n".join(out)


# --- scenarios -----------------------------------------------------------------------------------------


@dataclass
class Scenario:
    key: str
    label: str
    workers: list[WorkerSpec] = field(default_factory=list)
    probes: str | None = None  # None | "dedicated" | "shared"
    cli_threads: int | None = None

    @property
    def cluster(self) -> bool:
        return self.cli_threads is None

    @property
    def bulk_workers(self) -> list[WorkerSpec]:
        return [w for w in self.workers if w.queues != "wal"]


def scenarios() -> dict[str, Scenario]:
    return {
        "cli": Scenario("cli", "CLI, no Celery: its own worker processes (BACKUP_PROCESSES), BACKUP_THREADS=4", cli_threads=4),
        "a": Scenario("a", "(a) 1 worker pinned CPU0, 1 thread", [WorkerSpec("a0", 1, pin=0)]),
        "b": Scenario(
            "b",
            "(b) 2 workers pinned CPU0/CPU1, 1 thread each",
            [WorkerSpec("b0", 1, pin=0), WorkerSpec("b1", 1, pin=1)],
        ),
        "c": Scenario("c", "(c) 1 worker unpinned, 4 threads", [WorkerSpec("c0", 4)]),
        "d": Scenario(
            "d", "(d) 2 workers unpinned, 2 threads each", [WorkerSpec("d0", 2), WorkerSpec("d1", 2)]
        ),
        "wal": Scenario(
            "wal",
            "(d)+ dedicated wal worker, probes every 0.2 s",
            [WorkerSpec("w0", 2), WorkerSpec("w1", 2), WorkerSpec("walw", 1, queues="wal")],
            probes="dedicated",
        ),
        "walshared": Scenario(
            "walshared",
            "(d)+ no wal worker (bulk workers serve wal), probes",
            [
                WorkerSpec("s0", 2, queues=BULK_QUEUES + ",wal"),
                WorkerSpec("s1", 2, queues=BULK_QUEUES + ",wal"),
            ],
            probes="shared",
        ),
    }


@dataclass
class UnitTiming:
    number: int
    worker: str
    bytes: int
    files: int
    seconds: float  # the unit's own `seconds` column (body: input read .. output written)
    body_start: float  # finished_at - seconds (epoch)
    finished: float  # catalog finished_at (epoch)
    sent: float
    received: float
    started: float
    succeeded: float
    runtime: float  # task-succeeded runtime (measured in the pool process)
    wait: float = 0.0  # task started - max(sent, the worker's previous task done)
    pre: float = 0.0  # task started -> unit body start (claim, lease, heartbeat, input)
    post: float = 0.0  # unit finished -> task succeeded (done row, result, chord counter, ack)

    @property
    def overhead(self) -> float:
        return self.wait + self.pre + self.post


@dataclass
class Result:
    scenario: Scenario
    seconds: float
    summary: dict[str, Any]
    cpu_workers: float = 0.0
    cpu_self: float = 0.0
    cpu_catalog: float = 0.0  # the PostgreSQL backends serving this scenario's database
    cpu_broker: float = 0.0  # redis-server
    others: float = 0.0  # cores used by other processes during the span
    units: list[UnitTiming] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    probes: list[tuple[float, float | None, float | None]] = field(default_factory=list)
    probe_warmup: float | None = None
    known_ids: tuple[int, float] | None = None  # (chunks in index, seconds to load the set)
    packs: int = 0
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, tree: Path, tree_bytes: int) -> None:
        self.args = args
        self.work = work
        self.tree = tree
        self.tree_bytes = tree_bytes
        (work / "redis").mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(free_port(), work / "redis")
        self.pg = Postgres(args.pg_url)
        self.recorder: EventRecorder | None = None
        self.app: Any = None
        script = Path(sys.executable).parent / "equisplit-dr"
        self.cli = [str(script)] if script.exists() else [sys.executable, "-m", "app.cli.main"]
        self.base_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("BACKUP_", "DATABASE_URL", "EQUISPLIT", "CELERY_", "SENTRY_"))
        }
        self.live_workers: Workers | None = None

    # setup/teardown -------------------------------------------------------------------------------

    def start(self) -> None:
        self.redis.start()
        os.environ["CELERY_BROKER_URL"] = self.redis.url
        os.environ.pop("CELERY_RESULT_BACKEND", None)
        from workers import app

        self.app = app
        self.recorder = EventRecorder(app)
        self.recorder.start()
        self.recorder.wait_ready()

    def close(self) -> None:
        """Stop everything this script started; each step runs even if an earlier one failed."""
        steps: list[Callable[[], None]] = []
        if self.live_workers is not None:
            steps.append(self.live_workers.stop)
        if self.recorder is not None:
            steps.append(self.recorder.stop)
        steps += [self.pg.drop_all, self.redis.stop]
        failed: BaseException | None = None
        for step in steps:
            try:
                step()
            except Exception as exc:
                failed = failed or exc
        if failed is not None:
            raise failed

    def env_for(self, root: Path, db_url: str) -> dict[str, str]:
        return {
            **self.base_env,
            "EQUISPLIT_DR_HOME": str(root / "home"),
            "DATABASE_URL": db_url,
            "BACKUP_STORAGE_URL": (root / "repo").as_uri(),
            "BACKUP_ENCRYPTION_KEY": secrets.token_hex(32),
            "BACKUP_UNIT_BYTES": str(self.args.unit_mib * MiB),
            "CELERY_BROKER_URL": self.redis.url,
            "PYTHONPATH": str(PROJECT),
        }

    def cli_run(self, cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
        """Run the CLI; (wall, CPU of the child, stdout)."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            started = time.perf_counter()
            proc = subprocess.Popen(
                [*self.cli, *cmd], env=env, cwd=PROJECT, stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - started
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        if os.waitstatus_to_exitcode(status) != 0:
            raise Broke(
                f"`equisplit-dr {' '.join(cmd)}` failed\n--- stdout:\n{stdout[-3000:]}\n"
                f"--- stderr:\n{stderr[-3000:]}"
            )
        return wall, usage.ru_utime + usage.ru_stime, stdout

    # one scenario -----------------------------------------------------------------------------------

    def run(self, sc: Scenario, round_: int = 1) -> Result:
        root = self.work / (sc.key if self.args.repeat == 1 else f"{sc.key}-{round_}")
        root.mkdir(parents=True, exist_ok=True)
        db_url = self.pg.create()
        env = self.env_for(root, db_url)
        try:
            self.cli_run(["init"], env)
            self.cli_run(["source", "add", "bench", "--path", str(self.tree)], env)
            if not sc.cluster:
                return self._run_cli(sc, env, db_url)
            return self._run_cluster(sc, env, db_url, root)
        finally:
            self.pg.drop(db_url)
            shutil.rmtree(root / "repo", ignore_errors=True)  # ~0.7 GB each; --keep keeps the logs

    def _run_cli(self, sc: Scenario, env: dict[str, str], db_url: str) -> Result:
        env = {**env, "BACKUP_THREADS": str(sc.cli_threads)}
        sync()
        self._quiet()
        meter = CpuMeter(self, db_url, set())
        meter.start()
        wall, cpu, stdout = self.cli_run(
            ["backup", "run", "--source", "bench", "--type", "full", "--json"], env
        )
        info = json.loads(stdout)
        res = Result(
            sc,
            wall,
            {
                "state": info.get("state"),
                "bytes_read": info.get("bytes_read"),
                "bytes_stored": info.get("bytes_stored"),
                "backup_id": info.get("id"),
            },
        )
        meter.stop(res, external=cpu)  # the CLI's CPU from wait4; its catalog backend has exited: in others
        if info.get("state") != "complete":
            raise Broke(f"CLI backup ended {info.get('state')}: {stdout[-2000:]}")
        res.known_ids, res.packs = self._catalog_costs(db_url)
        return res

    def _quiet(self) -> None:
        if self.args.quiet_wait:
            wait_for_quiet(self.args.quiet_wait)

    def _run_cluster(self, sc: Scenario, env: dict[str, str], db_url: str, root: Path) -> Result:
        from tasks.backup import run_backup

        assert self.recorder is not None
        logdir = root / "logs"
        logdir.mkdir(exist_ok=True)
        self.app.control.purge()
        workers = Workers(env, logdir)
        self.live_workers = workers
        try:
            workers.start(sc.workers)
            warmup = self._probe_warmup() if sc.probes else None
            sync()
            self._quiet()
            self.recorder.take()
            meter = CpuMeter(self, db_url, workers.pgids())
            meter.start()
            stop_probes = threading.Event()
            probes: list[tuple[str, float]] = []
            prober = None
            if sc.probes:
                prober = threading.Thread(target=self._probe_loop, args=(stop_probes, probes), daemon=True)
                prober.start()
            t0 = time.time()
            async_result = run_backup.delay("bench", "full")
            summary = async_result.get(timeout=self.args.timeout, propagate=False)
            t1 = time.time()
            res = Result(sc, t1 - t0, {})
            meter.stop(res)
            stop_probes.set()
            if prober is not None:
                prober.join()
            if not isinstance(summary, dict) or summary.get("state") != "complete":
                raise Broke(f"{sc.key}: the backup ended {summary!r}\n{workers.tails()}")
            probe_wait_started = time.monotonic()
            if probes:
                self._wait_probes([u for u, _ in probes], 180)
            time.sleep(1.5)  # trailing events
            probe_drain = time.monotonic() - probe_wait_started
            events = self.recorder.take()
        finally:
            workers.stop()
            self.live_workers = None
        res.summary = summary
        res.probe_warmup = warmup
        res.units, res.phases = self._timings(summary["backup_id"], db_url, events, workers, t0, t1)
        by_uuid = {r["uuid"]: r for r in events if r.get("name") == PROBE_TASK}
        res.probes = [
            (
                enq,
                ev["started"]["timestamp"] if "started" in (ev := by_uuid.get(uuid, {})) else None,
                ev["received"]["timestamp"] if "received" in ev else None,
            )
            for uuid, enq in probes
        ]
        if probes:
            res.notes.append(
                f"after the backup, waited {probe_drain:.1f} s for the remaining probes to start"
            )
        res.known_ids, res.packs = self._catalog_costs(db_url)
        return res

    # WAL probes ---------------------------------------------------------------------------------------

    def _probe_warmup(self) -> float:
        """One probe before timing, so the worker that serves `wal` has opened its catalog connection."""
        from tasks.wal import archive_check

        t = time.time()
        result = archive_check.apply_async()
        result.get(timeout=60)
        return time.time() - t

    def _probe_loop(self, stop: threading.Event, out: list[tuple[str, float]]) -> None:
        from tasks.wal import archive_check

        interval = self.args.wal_interval
        next_at = time.monotonic()
        while not stop.is_set():
            enqueued = time.time()
            out.append((archive_check.apply_async().id, enqueued))
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))

    def _wait_probes(self, uuids: list[str], limit: float) -> None:
        assert self.recorder is not None
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if all(self.recorder.started(u) for u in uuids):
                return
            time.sleep(0.2)

    # timings --------------------------------------------------------------------------------------

    def _timings(
        self,
        backup_id: str,
        db_url: str,
        events: list[dict[str, Any]],
        workers: Workers,
        t0: float,
        t1: float,
    ) -> tuple[list[UnitTiming], dict[str, float]]:
        from sqlalchemy import create_engine, text

        engine = create_engine(db_url)
        try:
            with engine.connect() as conn:
                rows = {
                    r.number: r
                    for r in conn.execute(
                        text(
                            "SELECT number, worker, bytes, files, seconds, started_at, finished_at "
                            "FROM backup_units WHERE backup_id = :b"
                        ),
                        {"b": backup_id},
                    )
                }
        finally:
            engine.dispose()

        def ts(ev: dict[str, Any], kind: str) -> float | None:
            return ev[kind]["timestamp"] if kind in ev else None

        units: list[UnitTiming] = []
        by_worker: dict[str, list[tuple[float, float]]] = {}  # hostname -> [(started, done)] of every task
        plan = final = None
        for ev in events:
            name = ev.get("name")
            host = (ev.get("started") or ev.get("received") or {}).get("hostname")
            start, done = ts(ev, "started"), ts(ev, "succeeded") or ts(ev, "failed")
            if host and start is not None:
                by_worker.setdefault(host, []).append((start, done if done is not None else start))
            if name == PLAN_TASK:
                plan = ev
            elif name == FINAL_TASK:
                final = ev
            elif name == UNIT_TASK:
                args = ast.literal_eval(ev["received"]["args"]) if "received" in ev else None
                if not args or args[0] != backup_id:
                    continue
                row = rows.get(args[1])
                if row is None or row.seconds is None or "succeeded" not in ev:
                    continue
                finished = row.finished_at.timestamp()
                units.append(
                    UnitTiming(
                        number=args[1],
                        worker=host or "?",
                        bytes=row.bytes,
                        files=row.files,
                        seconds=row.seconds,
                        body_start=finished - row.seconds,
                        finished=finished,
                        sent=ts(ev, "sent") or ev["received"]["timestamp"],
                        received=ev["received"]["timestamp"],
                        started=ev["started"]["timestamp"],
                        succeeded=ev["succeeded"]["timestamp"],
                        runtime=float(ev["succeeded"].get("runtime") or 0.0),
                    )
                )
        if len(units) != len(rows):
            raise Broke(f"timed {len(units)} of {len(rows)} units from the Celery events")
        units.sort(key=lambda u: u.number)
        first_sent = min(u.sent for u in units)
        for u in units:
            earlier = [d for s, d in by_worker.get(u.worker, []) if s < u.started - 1e-6]
            # the worker that planned the backup sends the units at the end of run_backup (replaced, so no
            # task-succeeded event): its first unit counts from when the units were sent
            prev_done = max([d for d in earlier] + [u.sent])
            u.wait = max(0.0, u.started - prev_done)
            u.pre = max(0.0, u.body_start - u.started)
            u.post = max(0.0, u.succeeded - u.finished)
        phases: dict[str, float] = {}
        if plan and "started" in plan:
            phases["enqueue to plan start"] = plan["started"]["timestamp"] - t0
            phases["plan (walk, unit inputs, catalog)"] = first_sent - plan["started"]["timestamp"]
        last_done = max(u.succeeded for u in units)
        phases["unit phase (first unit sent .. last done)"] = last_done - first_sent
        if final and "started" in final and "succeeded" in final:
            phases["chord join (last unit done .. finalize start)"] = (
                final["started"]["timestamp"] - last_done
            )
            phases["finalize"] = final["succeeded"]["timestamp"] - final["started"]["timestamp"]
            phases["result to client"] = t1 - final["succeeded"]["timestamp"]
        return units, phases

    def _catalog_costs(self, db_url: str) -> tuple[tuple[int, float], int]:
        """How long loading the whole chunk index takes on the finished catalog (what each worker process's
        first unit of a backup did before its lookups were batched, issue #14), and the packs indexed."""
        from sqlalchemy import create_engine, func, select
        from sqlalchemy.orm import Session

        from app.catalog.models import Pack

        def _whole_index(session: Session) -> set[str]:
            return {row[0] for row in session.connection().exec_driver_sql("SELECT id FROM chunks")}

        engine = create_engine(db_url)
        try:
            with Session(engine) as session:
                _whole_index(session)  # connect, warm the server's cache
                best = math.inf
                for _ in range(3):
                    started = time.perf_counter()
                    known = _whole_index(session)
                    best = min(best, time.perf_counter() - started)
                packs = session.scalar(select(func.count()).select_from(Pack)) or 0
        finally:
            engine.dispose()
        return (len(known), best), int(packs)


# --- the report ------------------------------------------------------------------------------------------


def overhead_figures(res: Result) -> dict[str, float]:
    units = res.units
    total = sum(u.seconds for u in units)
    n_workers = len(res.scenario.bulk_workers)
    first_sent = min(u.sent for u in units)
    last_done = max(u.succeeded for u in units)
    phase = last_done - first_sent
    per_unit = [u.overhead / u.seconds for u in units if u.seconds > 0]
    busy: dict[str, tuple[float, float]] = {}
    for u in units:
        lo, hi = busy.get(u.worker, (math.inf, 0.0))
        busy[u.worker] = (min(lo, u.started), max(hi, u.succeeded))
    tail_idle = sum(last_done - hi for _lo, hi in busy.values())
    firsts = {min((u for u in units if u.worker == w), key=lambda u: u.started).number for w in busy}
    warm = [u for u in units if u.number not in firsts]
    return {
        "warm_ratio": (sum(u.overhead for u in warm) / sum(u.seconds for u in warm)) if warm else math.nan,
        "first_overhead": sum(u.overhead for u in units if u.number in firsts),
        "sum_seconds": total,
        "sum_overhead": sum(u.overhead for u in units),
        "sum_wait": sum(u.wait for u in units),
        "sum_pre": sum(u.pre for u in units),
        "sum_post": sum(u.post for u in units),
        "per_unit_ratio": sum(u.overhead for u in units) / total,
        "per_unit_median": statistics.median(per_unit),
        "per_unit_max": max(per_unit),
        "child_ratio": sum(u.runtime - u.seconds for u in units) / total,
        "phase": phase,
        "aggregate_ratio": (phase * n_workers - total) / total,
        "tail_idle": tail_idle,
        "tail_idle_ratio": tail_idle / total,
    }


def simulate(unit_seconds: list[float], workers: int, largest_first: bool = False) -> float:
    """Makespan of units dispatched in order (Celery: a FIFO queue, each free worker takes the next)."""
    free = [0.0] * workers
    order = sorted(unit_seconds, reverse=True) if largest_first else unit_seconds
    for s in order:
        i = min(range(workers), key=free.__getitem__)
        free[i] += s
    return max(free)


def report(
    results: dict[str, Result],
    runs: dict[str, list[Result]],
    args: argparse.Namespace,
    tree_bytes: int,
    tree_files: int,
) -> int:
    def mbps(r: Result) -> float:
        return tree_bytes / MB / r.seconds

    log("\n" + "=" * 100)
    log(
        f"RESULTS  (tree: {tree_files} files, {tree_bytes / MB:.1f} MB; BACKUP_UNIT_BYTES = "
        f"{args.unit_mib} MiB = {args.unit_mib * MiB} bytes; MB = 10^6 bytes)"
    )
    log("=" * 100)
    a = results.get("a")
    if args.repeat > 1:
        log(
            f"(each scenario ran {args.repeat} times; the fastest run of each is reported, all runs listed below)"
        )
    log(
        f"\n{'scenario':<52} {'seconds':>8} {'MB/s':>6} {'vs (a)':>6} {'units':>5} {'wkr CPU':>7} "
        f"{'pg CPU':>6} {'redis':>5} {'cores':>5} {'others':>6}"
    )
    for r in results.values():
        speed = f"{a.seconds / r.seconds:.2f}x" if a else "-"
        cores = (r.cpu_workers + r.cpu_self + r.cpu_catalog + r.cpu_broker) / r.seconds
        log(
            f"{r.scenario.label:<52} {r.seconds:8.2f} {mbps(r):6.1f} {speed:>6} {len(r.units) or '-':>5} "
            f"{r.cpu_workers:7.1f} {r.cpu_catalog:6.1f} {r.cpu_broker:5.1f} {cores:5.2f} {r.others:6.2f}"
        )
    log(
        "  wkr CPU: CPU seconds of the workers' processes (the CLI's, for the CLI) in the timed span; pg CPU: "
        "the PostgreSQL\n  backends of the scenario's database (the CLI's backend is gone when measured: in "
        "others); redis: redis-server;\n  cores: all of these plus this script, per second; others: cores the "
        "rest of the machine used meanwhile\n  (other sessions, kernel writeback, PostgreSQL's own WAL writer "
        "and checkpointer), from /proc/stat.\n  The CLI row's 'vs (a)' compares it with the 1-worker pinned "
        "cluster run."
    )
    if args.repeat > 1:
        log("  all runs (seconds, others):")
        for key, rs in runs.items():
            log(f"    {key:<10} " + ", ".join(f"{r.seconds:.2f} s ({r.others:.2f})" for r in rs))

    # phases
    cluster = [r for r in results.values() if r.scenario.cluster]
    if cluster:
        log("\nWhere the time of each cluster backup went (Celery event timestamps):")
        keys: list[str] = []
        for r in cluster:
            keys += [k for k in r.phases if k not in keys]
        log(f"  {'phase':<48}" + "".join(f"{r.scenario.key:>10}" for r in cluster))
        for k in keys:
            log(f"  {k:<48}" + "".join(f"{r.phases.get(k, math.nan):10.2f}" for r in cluster))
        log(
            f"  {'sum of units own seconds (catalog)':<48}"
            + "".join(f"{sum(u.seconds for u in r.units):10.2f}" for r in cluster)
        )
        log(
            f"  {'largest unit: seconds':<48}"
            + "".join(f"{max(u.seconds for u in r.units):10.2f}" for r in cluster)
        )
        log(
            f"  (the plan phase includes walking the tree: walk_tree alone took {args.walk_seconds:.2f} s in this "
            "process, warm cache)"
        )

    # overhead
    if cluster:
        log("\nBroker + catalog overhead per unit.")
        log(
            "  Per unit (Celery events + the unit's catalog row):\n"
            "    wait = task-started - max(task-sent, the same worker's previous task-succeeded)   (broker "
            "fetch, ack, prefork hand-off)\n"
            "    pre  = (finished_at - seconds) - task-started    (claim row, lease name, heartbeat beat: "
            "catalog transactions)\n"
            "    post = task-succeeded - finished_at              (unit done row + progress, result to Redis, "
            "chord counter, ack)\n"
            "    overhead = sum(wait + pre + post) / sum(seconds)   [seconds = the unit's own `seconds` column]\n"
            "  Aggregate: (unit-phase wall x bulk workers - sum(seconds)) / sum(seconds): adds the workers' "
            "idle tail (imbalance)."
        )
        log(f"  {'':<34}" + "".join(f"{r.scenario.key:>10}" for r in cluster))
        figs = {r.scenario.key: overhead_figures(r) for r in cluster}
        rows: list[tuple[str, Callable[[dict[str, float], Result], str]]] = [
            ("units", lambda f, r: f"{len(r.units):10d}"),
            ("sum seconds (s)", lambda f, r: f"{f['sum_seconds']:10.2f}"),
            ("sum wait (s)", lambda f, r: f"{f['sum_wait']:10.3f}"),
            ("sum pre (s)", lambda f, r: f"{f['sum_pre']:10.3f}"),
            ("sum post (s)", lambda f, r: f"{f['sum_post']:10.3f}"),
            ("per-unit overhead (sum)", lambda f, r: f"{f['per_unit_ratio'] * 100:9.2f}%"),
            ("  without each worker's 1st unit", lambda f, r: f"{f['warm_ratio'] * 100:9.2f}%"),
            ("  1st units' overhead (s)", lambda f, r: f"{f['first_overhead']:10.3f}"),
            ("per-unit overhead median", lambda f, r: f"{f['per_unit_median'] * 100:9.2f}%"),
            ("per-unit overhead worst unit", lambda f, r: f"{f['per_unit_max'] * 100:9.2f}%"),
            ("check: (runtime - seconds)/seconds", lambda f, r: f"{f['child_ratio'] * 100:9.2f}%"),
            ("aggregate overhead", lambda f, r: f"{f['aggregate_ratio'] * 100:9.2f}%"),
            ("  of which idle tail", lambda f, r: f"{f['tail_idle_ratio'] * 100:9.2f}%"),
        ]
        for label, fmt in rows:
            log(f"  {label:<34}" + "".join(fmt(figs[r.scenario.key], r) for r in cluster))
        log(
            "  (runtime: the task's run time measured by the pool process, from its task-succeeded event. A "
            "worker's 1st unit also pays\n  for opening the process's catalog engine and repository (workers are "
            "started fresh for each scenario).)"
        )
        log(
            "\n  Catalog work hidden inside a unit's own `seconds` (not counted above): a worker process's "
            "dedup lookups (batched since issue #14,\n  app/backup/known.py). For comparison, what loading "
            "the whole chunk index (as every worker process's first unit did before) costs on the final catalog:"
        )
        for r in results.values():
            if r.known_ids:
                n, s = r.known_ids
                per = (sum(u.seconds for u in r.units) / len(r.units)) if r.units else None
                share = f" = {s / per * 100:.1f} % of the mean unit ({per:.2f} s)" if per else ""
                if r.units:  # once per worker process, on an index that is empty (a fresh repository) to n
                    total = sum(u.seconds for u in r.units)
                    loads = len({u.worker for u in r.units})
                    share += (
                        f"; loaded {loads}x (once per worker process) = at most {loads * s:.2f} s, "
                        f"{loads * s / total * 100:.1f} % of the units' seconds"
                    )
                log(
                    f"    {r.scenario.key:<10} {n} chunk ids, {r.packs} packs: loading the set takes "
                    f"{s * 1000:.0f} ms{share}"
                )

    # per-unit detail of the pinned 2-worker run
    for key, ref_key in (("b", "a"), ("d", "c")):
        detail, ref = results.get(key), results.get(ref_key)
        if detail is None:
            continue
        ref_secs = {u.number: u.seconds for u in ref.units} if ref else {}
        log(
            f"\nPer unit, scenario ({key}) (start: relative to the first unit sent; '({ref_key}) s': the same "
            f"unit's seconds in ({ref_key})):"
        )
        base = min(u.sent for u in detail.units)
        log(
            f"  {'unit':>4} {'worker':<8} {'MiB':>6} {'files':>6} {'start':>7} {'seconds':>8} {'MB/s':>6} "
            f"{f'({ref_key}) s':>7} {'wait':>6} {'pre':>6} {'post':>6} {'ovh %':>6}"
        )
        for u in detail.units:
            other = f"{ref_secs[u.number]:7.2f}" if u.number in ref_secs else f"{'-':>7}"
            log(
                f"  {u.number:>4} {u.worker.split('@')[0]:<8} {u.bytes / MiB:6.1f} {u.files:6d} "
                f"{u.started - base:7.2f} {u.seconds:8.2f} {u.bytes / MB / u.seconds:6.1f} {other} {u.wait:6.3f} "
                f"{u.pre:6.3f} {u.post:6.3f} {u.overhead / u.seconds * 100:6.2f}"
            )

    # ideal spread from (a)
    if a and a.units:
        secs = [u.seconds + u.overhead for u in a.units]  # each unit's whole cost on one core, as in (a)
        serial = a.seconds - a.phases.get("unit phase (first unit sent .. last done)", sum(secs))
        in_order = simulate(secs, 2)
        lpt = simulate(secs, 2, largest_first=True)
        perfect = max(sum(secs) / 2, max(secs))
        log(
            "\nWhat 2 one-core workers could reach, from (a)'s own per-unit costs (unit seconds + its overhead in "
            "(a)), if nothing else changed (no contention between the two cores):"
        )
        log(
            f"  (a): {a.seconds:.2f} s = {serial:.2f} s outside the unit phase (plan, join, finalize, result) "
            f"+ units (with their overhead) {sum(secs):.2f} s"
        )
        for label, span in (
            ("units in Celery's order (FIFO), 2 workers", in_order),
            ("largest unit first, 2 workers", lpt),
            ("perfect split of the unit time", perfect),
        ):
            total = serial + span
            log(f"  {label:<44} {total:7.2f} s -> speed-up {a.seconds / total:.2f}x")
        b = results.get("b")
        if b and b.units:
            slow = sum(u.seconds for u in b.units) / sum(u.seconds for u in a.units)
            total = serial + simulate([x * slow for x in secs], 2)
            log(
                f"  {'FIFO, units as slow as they ran in (b)':<44} {total:7.2f} s -> speed-up "
                f"{a.seconds / total:.2f}x   (sum of unit seconds (b)/(a) = {slow:.2f}: both CPUs busy)"
            )

    # WAL
    for key in ("wal", "walshared"):
        if (wr := results.get(key)) is None:
            continue
        started = [s - e for e, s, _ in wr.probes if s is not None]
        received = [rc - e for e, _, rc in wr.probes if rc is not None]
        missing = sum(1 for _, s, _ in wr.probes if s is None)
        what = (
            "a dedicated worker on -Q wal (-c 1), bulk workers on -Q backup,chunks"
            if key == "wal"
            else "NO dedicated worker: the two bulk workers consume backup,chunks,wal"
        )
        log(f"\nWAL-queue latency, enqueue -> task-started, while a (d)-style backup runs ({what}):")
        log(
            f"  probe: tasks.wal.archive_check (routed to queue `wal`; archiving itself never goes through "
            f"the broker) sent every {args.wal_interval} s"
        )
        if started:
            log(
                f"  {len(wr.probes)} probes: median {statistics.median(started):.3f} s, p95 {pct(started, 95):.3f} s, "
                f"max {max(started):.3f} s; (enqueue -> task-received: median {statistics.median(received):.3f} s, "
                f"p95 {pct(received, 95):.3f} s)" + (f"; {missing} never started" if missing else "")
            )
        if wr.probe_warmup is not None:
            log(f"  (one warm-up probe before timing, not counted: {wr.probe_warmup:.3f} s round trip)")
        for note in wr.notes:
            log(f"  {note}")
        log(f"  the backup itself took {wr.seconds:.2f} s ({tree_bytes / MB / wr.seconds:.1f} MB/s)")

    # verdicts
    log("\nTargets:")
    verdicts = []

    def verdict(ok: bool | None, text: str) -> None:
        tag = "PASS" if ok else ("FAIL" if ok is not None else "n/a ")
        verdicts.append(ok)
        log(f"  [{tag}] {text}")

    b, c, d = results.get("b"), results.get("c"), results.get("d")
    if a and b:
        verdict(
            a.seconds / b.seconds >= TARGET_SPEEDUP,
            f"pinned, 2 workers vs 1: speed-up {a.seconds / b.seconds:.2f}x (target >= {TARGET_SPEEDUP}x)",
        )
    if c and d:
        ratio = d.seconds / c.seconds
        verdict(
            ratio <= 1 + TARGET_SPREAD_NOISE,
            f"unpinned, 2 workers x 2 threads vs 1 worker x 4 threads: (d)/(c) time ratio {ratio:.3f} "
            f"(target <= 1, allowing {TARGET_SPREAD_NOISE:.0%} noise)",
        )
    for key in ("d", "b"):
        if (ovr := results.get(key)) is not None:
            f = overhead_figures(ovr)
            verdict(
                f["per_unit_ratio"] < TARGET_OVERHEAD,
                f"({key}) broker+catalog overhead per unit {f['per_unit_ratio'] * 100:.2f} % of unit time "
                f"(target < {TARGET_OVERHEAD:.0%}); aggregate incl. idle tail {f['aggregate_ratio'] * 100:.2f} %",
            )
    w = results.get("wal")
    if w:
        started = [s - e for e, s, _ in w.probes if s is not None]
        missing = sum(1 for _, s, _ in w.probes if s is None)
        p95 = pct(started, 95) if started else math.inf
        verdict(
            p95 < TARGET_WAL_P95 and not missing,
            f"WAL-queue latency p95 {p95:.3f} s with a dedicated wal worker (target < {TARGET_WAL_P95} s)",
        )
    ws = results.get("walshared")
    if ws:
        started = [s - e for e, s, _ in ws.probes if s is not None]
        log(
            f"  [info] without a dedicated wal worker: p95 {pct(started, 95):.3f} s, max "
            f"{max(started) if started else math.nan:.3f} s"
        )
    for line in args.calibration:
        log(f"  [info] machine calibration: {line.strip()}")
    cli = results.get("cli")
    if cli and d:
        log(
            f"  [info] CLI (no Celery) {cli.seconds:.2f} s vs (d) {d.seconds:.2f} s: cluster/CLI = "
            f"{d.seconds / cli.seconds:.2f}"
        )
    others = max((r.others for r in results.values()), default=0.0)
    if others > 0.25:
        log(
            f"\nNOTE: other processes used up to {others:.2f} cores during a timed span: figures taken then "
            f"measure a busier machine (see 'others')."
        )
    return 0


# --- main ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="tree size, 1.0 = about 1 GiB")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=BENCH_DIR / "out" / "cluster")
    parser.add_argument("--keep", action="store_true", help="keep the workdir (tree, repositories, logs)")
    parser.add_argument("--unit-mib", type=int, default=256,
                        help="BACKUP_UNIT_BYTES in MiB (default 256, the setting's own default)")
    parser.add_argument(
        "--scenarios",
        default="cli,a,b,c,d,wal,walshared",
        help="comma-separated subset of cli,a,b,c,d,wal,walshared",
    )
    parser.add_argument("--wal-interval", type=float, default=0.2)
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60,
        help="before each timed span, wait up to this many seconds for other processes to idle",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("EQUISPLIT_BENCH_PG_URL", DEFAULT_PG),
        help="PostgreSQL maintenance database (trust auth); a fresh database is made per run",
    )
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every scenario N times, in rounds; the fastest run of each is reported (the machine is shared)",
    )
    parser.add_argument("--no-calibrate", action="store_true", help="skip the CPU-scaling calibration")
    parser.set_defaults(calibration=[], walk_seconds=math.nan)
    args = parser.parse_args(argv)
    wanted = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    table = scenarios()
    unknown = [s for s in wanted if s not in table]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(table)}")
    if os.cpu_count() and os.cpu_count() < 2 and any(k in wanted for k in ("b",)):  # type: ignore[operator]
        parser.error("scenario (b) pins workers to CPU 0 and CPU 1: this machine has one CPU")

    work = args.workdir.resolve()
    prepare_workdir(work)
    log(f"machine: {machine()}")
    log(f"workdir: {work}; code: {PROJECT}")
    log(
        f"BACKUP_UNIT_BYTES = {args.unit_mib} MiB ({args.unit_mib * MiB} bytes); compression on (default level)"
    )

    log(f"\n[1] the bench tree (scale {args.scale}, seed {args.seed})")
    started = time.perf_counter()
    tree, tree_files, tree_bytes, reused = ensure_tree(work, args.scale, args.seed)
    log(
        f"  {'reused' if reused else 'generated'} {tree}: {tree_files} files, {tree_bytes / MB:.1f} MB "
        f"({time.perf_counter() - started:.1f} s)"
    )
    log(
        "\n[2] warming the page cache: reading every file of the tree once before any timing "
        "(every scenario then reads from a warm cache; dropping the cache is not possible here)"
    )
    started = time.perf_counter()
    files, size = warm_cache(tree)
    log(f"  read {files} files, {size / MB:.1f} MB in {time.perf_counter() - started:.1f} s")

    args.walk_seconds, lines = plan_preview(tree, args.unit_mib * MiB)
    for line in lines:
        log(line)
    if not args.no_calibrate:
        log(
            "\n[2b] CPU scaling of this machine, outside equisplit-dr: the same work pinned to CPU 0 alone, "
            "then to CPU 0 and CPU 1 at once"
        )
        wait_for_quiet(args.quiet_wait)
        args.calibration = calibrate()
        for line in args.calibration:
            log(line)

    bench = Bench(args, work, tree, tree_bytes)
    results: dict[str, Result] = {}
    runs: dict[str, list[Result]] = {}
    status = 0
    try:
        log("\n[3] starting redis-server and the Celery event capture")
        bench.start()
        log(
            f"  redis-server on {bench.redis.url} (--save '' --appendonly no); catalog: a fresh PostgreSQL "
            f"database per scenario on {bench.pg.server.render_as_string(hide_password=True).rsplit('/', 1)[0]}"
        )
        step = 4
        for round_ in range(1, args.repeat + 1):
            for key in wanted:
                sc = table[key]
                tag = f" (round {round_} of {args.repeat})" if args.repeat > 1 else ""
                log(f"\n[{step}] {sc.label}{tag}")
                step += 1
                for w in sc.workers:
                    log(f"  worker {w.describe()}")
                res = bench.run(sc, round_)
                runs.setdefault(key, []).append(res)
                results[key] = min(runs[key], key=lambda r: r.seconds)
                extra = f", {len(res.units)} units" if res.units else ""
                log(
                    f"  {res.seconds:.2f} s, {tree_bytes / MB / res.seconds:.1f} MB/s{extra}; bytes stored "
                    f"{res.summary.get('bytes_stored', 0) / MB:.1f} MB; others {res.others:.2f} cores"
                )
    except Broke as exc:
        log(f"\nBROKEN: {exc}")
        status = 1
    except KeyboardInterrupt:
        log("\ninterrupted")
        status = 130
    finally:
        try:
            bench.close()
        except Exception as exc:
            log(f"cleanup failed: {exc!r}")
            status = status or 1
        if results:
            report(results, runs, args, tree_bytes, tree_files)
        if args.keep:
            log(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            log(f"\nremoved {work} (databases dropped, workers and redis-server stopped)")
    return status


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    sys.exit(main())
