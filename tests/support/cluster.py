"""Real cluster pieces for integration tests: a throwaway Redis server, Celery worker processes, and a
client app pointed at them. Workers are subprocesses (`celery -A workers worker`), never in-process.

Use from a conftest: `from tests.support.cluster import redis_server, cluster  # noqa: F401`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RedisServer:
    """A redis-server on a free loopback port, keeping nothing on disk; can be restarted in place."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed for the cluster tests (Debian package redis-server)"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), 2) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(16)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@dataclass
class Cluster:
    """Environment shared by the test process and its workers, and the worker processes started."""

    env: dict[str, str]
    logdir: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_worker(
        self,
        name: str,
        queues: str | None = None,
        *,
        concurrency: int = 1,
        extra_env: dict[str, str] | None = None,
        pin_cpu: int | None = None,
    ) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "worker",
            "-n",
            f"{name}@%h",
            "-c",
            str(concurrency),
            "--without-mingle",
            "--without-gossip",
            "-E",
            "--loglevel=INFO",
        ]
        if queues:
            cmd += ["-Q", queues]
        if pin_cpu is not None:
            cmd = ["taskset", "-c", str(pin_cpu), *cmd]
        with open(self.logdir / f"{name}.log", "wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                cmd,
                env={**self.env, **(extra_env or {})},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append(proc)
        self._wait_ready(name, proc)
        return proc

    def _wait_ready(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 60
        log = self.logdir / f"{name}.log"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker {name} exited:\n{log.read_text(errors='replace')[-3000:]}")
            if b"ready." in log.read_bytes():
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker {name} not ready in 60 s:\n{log.read_text(errors='replace')[-3000:]}")

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.logdir.glob("*.log")
        )

    def stop_all(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def unit_process(node: str, backup_id: str, number: int, timeout: float = 10) -> int:
    """The pid of the pool child of worker `node` (a node name, as units record it) that runs unit
    `number` of `backup_id`, as the worker itself reports it (`celery inspect active`)."""
    from workers import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.connection_for_write() as connection:  # fresh: a pooled one may predate a Redis restart
            active = app.control.inspect(destination=[node], timeout=2, connection=connection).active() or {}
        for task in active.get(node, []):
            if task.get("name") == "tasks.backup.backup_unit" and list(task.get("args") or [])[:2] == [
                backup_id,
                number,
            ]:
                return int(task["worker_pid"])
        time.sleep(0.05)
    raise AssertionError(f"worker {node} does not report unit {number} of {backup_id} as active")


def configure_client(env: dict[str, str]) -> Any:
    """Point this process's Celery app at the cluster's broker (the tests enqueue from here)."""
    from workers import app

    url = env["CELERY_BROKER_URL"]
    # conf.broker_url reads CELERY_BROKER_URL from the environment first: compare what the conf holds
    if app.conf.first("broker_url") == url and app.conf.result_backend == url and not app.conf.task_always_eager:
        return app
    app.conf.update(broker_url=url, result_backend=url, task_always_eager=False)
    if app._pool is not None:  # connections made under an earlier broker URL
        app._pool.force_close_all()
        app._pool = None
        app.amqp._producer_pool = None  # it holds the pool just closed ("Acquire on closed pool")
    # and the result backend an earlier test built (an eager one's): .get() would wait on it for ever
    app._backend_cache = None
    app._local.__dict__.pop("backend", None)
    return app


@pytest.fixture
def cluster(redis_server: RedisServer, fresh_pg_url: str, tmp_path: Path) -> Iterator[Cluster]:
    """A fresh catalog (PostgreSQL), repository (local directory) and broker; workers added by the test."""
    redis_server.flush()
    home = tmp_path / "home"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BACKUP_", "DATABASE_URL", "EQUISPLIT", "CELERY_", "SENTRY_"))
    }
    env.update(
        EQUISPLIT_DR_HOME=str(home),
        DATABASE_URL=fresh_pg_url,
        BACKUP_ENCRYPTION_KEY=secrets.token_hex(32),
        BACKUP_STORAGE_URL=(tmp_path / "repo").as_uri(),
        CELERY_BROKER_URL=redis_server.url,
        PYTHONPATH=str(ROOT),
        BACKUP_THREADS="2",
    )
    logdir = tmp_path / "logs"
    logdir.mkdir()
    c = Cluster(env, logdir)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        from app.system import BackupSystem

        with BackupSystem() as system:
            system.init()
        configure_client(env)
        yield c
    finally:
        c.stop_all()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
