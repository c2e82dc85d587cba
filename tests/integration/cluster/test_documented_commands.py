"""The README's cluster commands, run as written: each worker started by them is a node of its own
(Flower and `celery inspect` tell them apart), and Flower listens on loopback only. The compose file
gives each worker container its own node name and Flower no default password."""

from __future__ import annotations

import itertools
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cluster import ROOT, Cluster
from tests.support.ports import free_port

README = ROOT / "README.md"
COMPOSE = ROOT / "docker" / "compose.yaml"


def _readme_commands(prefix: str) -> list[list[str]]:
    """Each README line that starts with `prefix`, as argv without its trailing comment."""
    lines = []
    for line in README.read_text().splitlines():
        if line.startswith(prefix):
            lines.append(shlex.split(line.split("#", 1)[0]))
    assert lines, f"no `{prefix}` line in the README"
    return lines


def _node_name(argv: list[str]) -> str | None:
    for flag, value in itertools.pairwise(argv):
        if flag in ("-n", "--hostname"):
            return value
    return None


def _as_run_here(argv: list[str]) -> list[str]:
    assert argv[0] == "celery", argv
    return [sys.executable, "-m", "celery", *argv[1:]]


def test_every_documented_worker_command_names_its_own_node() -> None:
    workers = _readme_commands("celery -A workers worker")
    names = [_node_name(argv) for argv in workers]
    assert all(n and n.endswith("@%h") for n in names), f"a README worker has no -n NAME@%h: {names}"
    assert len(set(names)) == len(names), f"README workers share a node name: {names}"
    compose = COMPOSE.read_text()
    (worker,) = re.findall(r'command: \["celery", "-A", "workers", "worker",[^\]]*\]', compose)
    assert '"-n", "worker@%h"' in worker, worker
    assert "inspect ping -d worker@$$HOSTNAME" in compose, "the healthcheck pings the node by its name"


def test_compose_gives_flower_no_default_password() -> None:
    compose = COMPOSE.read_text()
    (setting,) = re.findall(r"FLOWER_BASIC_AUTH: (.*)", compose)
    assert setting.startswith("${FLOWER_BASIC_AUTH:?"), f"Flower's login must be required: {setting}"


@pytest.mark.postgres
@pytest.mark.slow
def test_readme_workers_are_distinct_nodes(cluster: Cluster) -> None:
    """Started as the README says, on one host, the workers answer `inspect ping` as one node each."""
    from workers import app

    workers = _readme_commands("celery -A workers worker")
    procs = []
    try:
        for n, argv in enumerate(workers):
            with open(cluster.logdir / f"readme-worker-{n}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        [*_as_run_here(argv), "-c", "1", "--loglevel=INFO"],
                        env=cluster.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + 60
        nodes: dict[str, object] = {}
        while time.monotonic() < deadline:
            nodes = app.control.inspect(timeout=1).ping() or {}
            if len(nodes) >= len(workers):
                break
            time.sleep(0.5)
        assert len(nodes) == len(workers), f"{len(workers)} workers answer as {sorted(nodes)}\n{cluster.logs()}"
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _listening(port: int) -> list[str]:
    """The local addresses (hex, as /proc/net/tcp* writes them) of sockets listening on `port`."""
    found = []
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for row in table.read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1


@pytest.mark.postgres
@pytest.mark.slow
def test_readme_flower_command_listens_on_loopback_only(cluster: Cluster) -> None:
    (argv,) = _readme_commands("celery -A workers flower")
    port = free_port()
    argv = [f"--port={port}" if a.startswith("--port") else a for a in argv]
    env = {k: v for k, v in cluster.env.items() if not k.startswith("FLOWER_")}
    with open(cluster.logdir / "flower.log", "wb") as log:
        proc = subprocess.Popen(
            _as_run_here(argv), env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while not _listening(port):
            assert proc.poll() is None and time.monotonic() < deadline, cluster.logs()
            time.sleep(0.1)
        addresses = _listening(port)
        assert set(addresses) <= LOOPBACK, f"Flower without a login listens on {addresses}, not only loopback"
    finally:
        proc.terminate()
        proc.wait(20)
