"""Flower (`celery -A workers flower`) as a subprocess of a test cluster, and Debian's chromium run
headless against it.

Use from a test module: `from tests.support.flower import chromium, flower  # noqa: F401`. A missing
chromium fails the test with the package to install; it is never skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import ROOT, Cluster
from tests.support.ports import free_port

CHROMIUM_PACKAGE = "chromium"
#: STACK-NOTES: these take a headless page of Flower in ~2 s as root in a container.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--mute-audio",
    "--hide-scrollbars",
)


@dataclass
class Chromium:
    binary: str

    def _run(
        self, url: str, *extra: str, budget_ms: int, timeout: float
    ) -> subprocess.CompletedProcess[bytes]:
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            cmd = [
                self.binary,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}",
                *extra,
                url,
            ]
            proc = subprocess.run(
                cmd, capture_output=True, timeout=timeout, check=False, start_new_session=True
            )
        if proc.returncode != 0:
            raise AssertionError(
                f"chromium exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-2000:]}"
            )
        return proc

    def dump_dom(self, url: str, *, budget_ms: int = 5000, timeout: float = 30) -> str:
        """The DOM after the page's scripts (and the XHRs they start) ran for `budget_ms` of virtual time."""
        return self._run(url, "--dump-dom", budget_ms=budget_ms, timeout=timeout).stdout.decode(
            errors="replace"
        )

    def screenshot(self, url: str, path: Path, *, budget_ms: int = 5000, timeout: float = 30) -> Path:
        self._run(
            url, f"--screenshot={path}", "--window-size=1400,1000", budget_ms=budget_ms, timeout=timeout
        )
        return path


@pytest.fixture(scope="session")
def chromium() -> Chromium:
    for name in ("chromium", "chromium-browser"):
        binary = shutil.which(name)
        if binary:
            return Chromium(binary)
    pytest.fail(
        f"the browser test needs Debian's {CHROMIUM_PACKAGE!r} package: "
        f"`apt-get install -y {CHROMIUM_PACKAGE}` (no chromium on PATH)",
        pytrace=False,
    )


@dataclass
class Flower:
    """`celery -A workers flower` on a free loopback port, with the cluster's environment."""

    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, env: dict[str, str], cwd: Path) -> None:
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "flower",
            f"--port={self.port}",
            "--address=127.0.0.1",
            "--persistent=False",
        ]
        with open(self.log, "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                cmd,
                env={**env, "FLOWER_UNAUTHENTICATED_API": "true", "PYTHONPATH": str(ROOT)},
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"flower exited {self.process.returncode}:\n{self.logs()}")
            try:
                if self.get("/healthcheck") == b"OK":
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"flower did not answer on {self.url} in 30 s:\n{self.logs()}")

    def get(self, path: str, timeout: float = 10) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as reply:
            return bytes(reply.read())

    def api(self, path: str) -> Any:
        return json.loads(self.get(path))

    def wait_for_worker(self, hostname_prefix: str, timeout: float = 30) -> str:
        """Wait until Flower's event stream has seen a worker: then it sees the tasks sent after."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.api("/api/workers?status=true")
            for name in seen:
                if name.startswith(hostname_prefix):
                    return str(name)
            time.sleep(0.2)
        raise AssertionError(f"flower saw no worker {hostname_prefix}* in {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None


@pytest.fixture
def flower(cluster: Cluster, tmp_path: Path) -> Iterator[Flower]:
    """Flower, started (and answering) before the test sends any task, so it sees them all."""
    workdir = tmp_path / "flower"
    workdir.mkdir()
    server = Flower(free_port(), cluster.logdir / "flower.log")
    try:
        server.start(cluster.env, workdir)
        yield server
    finally:
        server.stop()
