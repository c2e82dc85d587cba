"""The spool and the prefetcher (docs/WAL.md section 4), in process: digests, position, lock, window."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.errors import ObjectNotFoundError
from app.wal import names, prefetch
from app.wal.spool import Spool, digest, serve_hit

MiB = 1 << 20
START = names.parse("000000010000000000000010")


def seg(n: int) -> str:
    return names.segment_name(1, n, MiB)


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    made = Spool(tmp_path / "spool", "db")
    made.dir.mkdir(parents=True)
    return made


def test_a_spooled_segment_is_named_by_its_digest_and_taken_whole(spool: Spool, tmp_path: Path) -> None:
    spool.write(seg(17), lambda: b"abc" * 1000)
    (path,) = spool.spooled().values()
    assert path.name == f"{seg(17)}.{digest(b'abc' * 1000)}" and len(digest(b"")) == 32
    assert spool.take(seg(17), tmp_path / "out") == 3000
    assert (tmp_path / "out").read_bytes() == b"abc" * 1000 and spool.spooled() == {}
    assert spool.take(seg(17), tmp_path / "out") is None


def test_a_failed_download_leaves_no_file(spool: Spool) -> None:
    def fail() -> bytes:
        assert spool.in_flight(seg(17))
        raise ObjectNotFoundError("wal", seg(17), "memory://")

    with pytest.raises(ObjectNotFoundError):
        spool.write(seg(17), fail)
    assert os.listdir(spool.dir) == [] and not spool.in_flight(seg(17))


def test_position_lock_prune_and_clear(spool: Spool) -> None:
    assert spool.want() is None
    spool.set_want(seg(16), MiB)
    assert spool.want() == (names.parse(seg(16)), MiB)
    lock = spool.lock()
    assert lock is not None and spool.prefetcher_alive() and spool.prefetcher_pid() == os.getpid()
    assert Spool(spool.root, "db").lock() is None  # one prefetcher per spool
    os.close(lock)
    assert not spool.prefetcher_alive()
    for n in (15, 17, 18):
        spool.write(seg(n), lambda: b"x")
    spool.prune({seg(17), seg(18)})
    assert set(spool.spooled()) == {seg(17), seg(18)}
    spool.clear()
    assert spool.spooled() == {} and spool.want() is None


def test_the_prefetcher_keeps_the_window_full_and_stops_at_a_missing_segment(spool: Spool) -> None:
    available = {seg(n) for n in range(17, 20)}  # 17, 18, 19 archived; 20 not (yet)
    asked: list[str] = []

    def fetch(name: str) -> bytes:
        asked.append(name)
        if name not in available:
            raise ObjectNotFoundError("wal", name, "memory://")
        return name.encode()

    spool.set_want(seg(16), MiB)
    worker = threading.Thread(target=prefetch.run, args=(spool, fetch, 6, 2), kwargs={"idle_exit": 1.0})
    worker.start()
    deadline = time.monotonic() + 10
    while set(spool.spooled()) != available and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(spool.spooled()) == available
    assert seg(21) not in asked  # never past the missing segment 20
    worker.join(10)
    assert not worker.is_alive() and spool.spooled() == {}  # idle: it cleared the spool and left


def test_serve_hit_only_serves_spooled_segments(spool: Spool, tmp_path: Path) -> None:
    dest = tmp_path / "RECOVERYXLOG"
    assert not serve_hit("db", "00000002.history", dest, spool.root)
    assert not serve_hit("db", seg(17), dest, spool.root)
    assert not serve_hit("other", seg(17), dest, spool.root)


def test_the_console_script_serves_a_hit_without_loading_settings(spool: Spool, tmp_path: Path) -> None:
    spool.write(seg(17), lambda: b"segment bytes")
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
        "BACKUP_RETENTION_DAILY": "thirty",  # the settings would refuse this: they must not be read
        "WAL_PREFETCH": "0",  # the prefetcher it starts reads its settings, fails, and leaves
    }
    dest = tmp_path / "RECOVERYXLOG"
    command = [sys.executable, "-m", "app.cli.entry", "wal", "fetch", seg(17), str(dest), "-s", "db"]
    hit = subprocess.run([*command, "--spool", str(spool.root)], env=env, capture_output=True, text=True)
    assert (hit.returncode, hit.stderr) == (0, "") and dest.read_bytes() == b"segment bytes"
    miss = subprocess.run([*command, "--spool", str(spool.root)], env=env, capture_output=True, text=True)
    assert miss.returncode == 128 + 2 and "BACKUP_RETENTION_DAILY" in miss.stderr
