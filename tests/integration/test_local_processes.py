"""A backup run in one process spreads its units over worker processes of this machine
(app/backup/procpool.py): same result as on threads, one copy of repeated content, errors that keep
their type and message, and workers that die with the backup's process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.catalog.models import Chunk
from app.repo.format import Kind, ObjectType
from tests.support.system import Factory
from tests.support.trees import assert_same_tree, make_tree

POOL = {"backup_processes": 2, "backup_processes_min_bytes": 1 << 20}
EXE = [sys.executable, "-m", "app.cli.main"]


def _worker_pids(units: list[dict[str, object]]) -> set[int]:
    return {int(str(u["worker"]).rsplit(":", 1)[1]) for u in units}


def test_units_run_in_worker_processes_and_the_restore_equals_the_source(
    make_system: Factory, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", big_mib=20, small=60)
    system = make_system(**POOL)
    system.add_source("docs", src)
    result = system.create_full_backup("docs")
    shown = system.show_backup(result.id)
    assert len(shown["units"]) >= 2
    assert all(u["state"] == "done" for u in shown["units"])
    assert os.getpid() not in _worker_pids(shown["units"])  # read by the pool, not by this process
    system.restore(result.id, tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")

    threads_only = make_system(home=tmp_path / "threads", backup_processes=1)
    threads_only.add_source("docs", src)
    on_threads = threads_only.create_full_backup("docs")
    assert _worker_pids(threads_only.show_backup(on_threads.id)["units"]) == {os.getpid()}
    assert on_threads.stats["bytes_new"] == result.stats["bytes_new"]


def test_content_repeated_across_units_is_stored_once(make_system: Factory, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    payload = os.urandom(3 << 20)
    for i in range(6):  # 18 MiB in units of 8 MiB: the copies land in different processes
        (src / f"copy{i}.bin").write_bytes(payload)
    system = make_system(**POOL)
    system.add_source("copies", src)
    result = system.create_full_backup("copies")
    assert len(system.show_backup(result.id)["units"]) >= 2  # the copies are read by different units
    assert result.stats["bytes_new"] == len(payload)
    root = system.context.repository.read_json(Kind.MANIFESTS, result.id, ObjectType.MANIFEST)
    manifest_chunks = [chunk[0] for chunk in root["entries"]["chunks"]]  # indexed too, stored once
    with system.context.sessions() as session:
        chunk_bytes = session.scalar(
            select(func.sum(Chunk.raw_length)).where(Chunk.id.not_in(manifest_chunks))
        )
    assert chunk_bytes == len(payload)
    system.restore(result.id, tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")


def test_a_failing_unit_fails_the_backup_with_its_own_error(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big_mib=12, small=10)
    locked = src / "docs" / "locked.bin"
    locked.write_bytes(os.urandom(1 << 20))
    locked.chmod(0)
    env = _cli_env(tmp_path, BACKUP_PROCESSES_MIN_BYTES="1048576", BACKUP_ON_UNREADABLE="fail")
    _cli(env, "init")
    _cli(env, "source", "add", "docs", "--path", str(src))
    prefix: list[str] = []
    if os.geteuid() == 0:  # root reads anything: drop the capabilities that let it
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to test unreadable files as root"
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]
    failed = _cli(env, "backup", "run", "-s", "docs", "-t", "full", prefix=prefix, ok=False)
    # the worker process's error, with its message and hint, is the one the user reads
    assert failed.returncode != 0
    assert "docs/locked.bin" in failed.stderr and "BACKUP_ON_UNREADABLE=skip" in failed.stderr
    listed = json.loads(_cli(env, "backup", "list", "--json").stdout)
    assert [b["state"] for b in listed] == ["failed"]
    units = json.loads(_cli(env, "backup", "show", listed[0]["id"], "--json").stdout)["units"]
    assert len(units) >= 2 and "failed" in {u["state"] for u in units}


def test_a_killed_backup_takes_its_worker_processes_with_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(8):
        (src / f"part{i:02d}.bin").write_bytes(os.urandom(16 << 20))
    env = _cli_env(tmp_path)
    _cli(env, "init")
    _cli(env, "source", "add", "big", "--path", str(src))
    proc = subprocess.Popen(
        [*EXE, "backup", "run", "-s", "big", "-t", "full"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    catalog = Path(env["EQUISPLIT_DR_HOME"]) / "catalog.sqlite3"
    workers: set[int] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not workers:
        time.sleep(0.05)
        try:
            with sqlite3.connect(catalog, timeout=5) as db:
                rows = db.execute("SELECT worker FROM backup_units WHERE state = 'running'").fetchall()
        except sqlite3.OperationalError:
            continue
        workers = {int(w.rsplit(":", 1)[1]) for (w,) in rows if w}
    assert workers, "no unit started in time"
    assert proc.pid not in workers
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 15
    alive = set(workers)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {pid for pid in alive if _alive(pid)}
    assert not alive, f"worker processes {sorted(alive)} outlived the killed backup"
    rerun = _cli(env, "backup", "run", "-s", "big", "-t", "full", "--json")
    assert json.loads(rerun.stdout)["state"] == "complete"


def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "DATABASE_URL", "EQUISPLIT"))}
    env.update(
        EQUISPLIT_DR_HOME=str(tmp_path / "home"),
        BACKUP_ENCRYPTION_KEY=os.urandom(32).hex(),
        BACKUP_PROCESSES="2",
        BACKUP_THREADS="2",
        COLUMNS="400",
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        **extra,
    )
    return env


def _cli(
    env: dict[str, str], *args: str, ok: bool = True, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*(prefix or []), *EXE, *args], env=env, capture_output=True, text=True, timeout=300
    )
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_a_corrupt_pack_stops_a_restore_on_processes_naming_the_file_with_nothing_half_written(
    make_system: Factory, tmp_path: Path
) -> None:
    from app.errors import IntegrityError
    from app.restore.target import PARTIAL_SUFFIX

    src = make_tree(tmp_path / "src", big_mib=12, small=30)
    system = make_system(**POOL)
    system.add_source("docs", src)
    backup = system.create_full_backup("docs")
    packs = sorted((system.settings.home / "repo" / "packs").rglob("*"), key=lambda p: p.stat().st_size)
    biggest = [p for p in packs if p.is_file()][-1]
    data = bytearray(biggest.read_bytes())
    data[100] ^= 0x01  # inside the pack's first blob
    biggest.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(IntegrityError) as caught:  # raised in a worker process, same type here
        system.restore(backup.id, out)
    assert biggest.name in str(caught.value) and "cannot restore" in str(caught.value)
    assert not list(out.rglob("*" + PARTIAL_SUFFIX))


@pytest.mark.parametrize("processes", [1, 2])
def test_a_big_file_is_read_in_pieces_by_several_units_and_restores_whole(
    make_system: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: int
) -> None:
    monkeypatch.setattr("app.backup.plan.PIECE_BYTES", 1 << 20)  # planned here; workers read given ranges
    monkeypatch.setattr("app.restore.procpool.PIECE_BYTES", 1 << 20)  # and shared out here on restore
    src = tmp_path / "src"
    src.mkdir()
    big = src / "disk.img"
    big.write_bytes(os.urandom((5 << 20) + 12345))
    (src / "note.txt").write_text("small\n")
    system = make_system(
        backup_processes=processes, backup_processes_min_bytes=1 << 20, backup_unit_bytes=1 << 20
    )
    system.add_source("img", src)
    first = system.create_full_backup("img")
    units = system.show_backup(first.id)["units"]
    assert len(units) >= 6  # six pieces of disk.img (and the note with one of them)
    assert first.stats["files_read"] == 2 and first.stats["files"] == 2
    system.restore(first.id, tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")

    again = system.create_full_backup("img")  # pieces are cut at the same offsets: nothing new
    assert again.stats["bytes_new"] == 0
    with big.open("r+b") as handle:  # change 1 KiB in the third piece
        handle.seek((2 << 20) + 500)
        handle.write(os.urandom(1024))
    changed = system.create_full_backup("img")
    assert 0 < changed.stats["bytes_new"] <= 2 << 20  # one piece's chunk(s), not the whole file
    system.restore(changed.id, tmp_path / "out2")
    assert_same_tree(src, tmp_path / "out2")


def _backup_and_restore_in(home: Path, src: Path, out: Path, report: Path) -> None:
    from app.system import BackupSystem
    from tests.support.system import settings_for

    with BackupSystem(settings_for(home, **POOL), actor="test") as system:
        system.init()
        system.add_source("docs", src)
        result = system.create_full_backup("docs")
        pids = _worker_pids(system.show_backup(result.id)["units"])
        plan = system.restore(result.id, out)
    report.write_text(json.dumps({"pids": sorted(pids), "me": os.getpid(), "processes": plan.processes}))


def test_a_daemonic_process_like_a_celery_pool_child_still_uses_worker_processes(tmp_path: Path) -> None:
    """A Celery prefork child is a daemonic billiard process (it runs PostgreSQL backups and restores).
    Before: 'daemonic processes are not allowed to have children' from the first worker process."""
    import billiard

    src = make_tree(tmp_path / "src", big_mib=20, small=60)
    report = tmp_path / "report.json"
    child = billiard.get_context("fork").Process(
        target=_backup_and_restore_in, args=(tmp_path / "home", src, tmp_path / "out", report), daemon=True
    )
    child.start()
    child.join(240)
    assert child.exitcode == 0 and report.exists()
    seen = json.loads(report.read_text())
    assert seen["pids"] and seen["me"] not in seen["pids"] and seen["processes"] == 2, seen
    assert_same_tree(src, tmp_path / "out")


def _fork_server_pid() -> int | None:
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    return getattr(server, "_forkserver_pid", None)


def test_a_restore_started_for_processes_but_planned_in_one_leaves_no_fork_server(
    make_system: Factory, tmp_path: Path
) -> None:
    """The fork server starts once the manifest's entries are selected (app/restore/engine.py); a plan
    that ends up in one process (here: every file already in the target) stops it."""
    src = make_tree(tmp_path / "src", big_mib=4, small=10)
    system = make_system(**POOL)
    system.add_source("docs", src)
    result = system.create_full_backup("docs")
    first = system.restore(result.id, tmp_path / "out")
    assert first.processes == 2
    assert _fork_server_pid() is None
    again = system.restore(result.id, tmp_path / "out", skip_existing=True)
    assert again.processes == 1 and again.files == 0
    assert _fork_server_pid() is None  # started early, stopped unused
    assert_same_tree(src, tmp_path / "out")
