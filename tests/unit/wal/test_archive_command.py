"""`wal push` as PostgreSQL's archive_command, one process per file (docs/WAL.md section 3): the fast
path of the console script, the pusher it starts, and what happens when that pusher fails or dies. A
SQLite catalog and a local repository; no PostgreSQL server."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.catalog.models import WalArchive, WalSegment
from app.context import Context
from app.repo.format import Kind
from app.wal import names, segment
from app.wal.pushspool import PushSpool
from tests.unit.wal.conftest import SOURCE, WriteSegment, make_segment

PROJECT = Path(__file__).resolve().parents[3]

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def spool(pg_wal: Path) -> Iterator[PushSpool]:
    made = PushSpool(pg_wal, SOURCE)
    yield made
    owner = made.pusher()
    if owner is not None and owner.pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(owner.pid, signal.SIGTERM)


@pytest.fixture
def env(ctx: Context) -> dict[str, str]:
    """The environment PostgreSQL would give archive_command: where the archive is, and the source."""
    key = ctx.settings.backup_encryption_key
    assert key is not None
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONPATH": str(PROJECT),
        "EQUISPLIT_DR_HOME": str(ctx.settings.home),
        "BACKUP_ENCRYPTION_KEY": key.get_secret_value(),
        "EQUISPLIT_DR_SOURCE": SOURCE,
    }


@pytest.fixture
def run(env: dict[str, str], pg_wal: Path) -> Run:
    """Run a module of ours as a process in the data directory: `run("app.cli.entry", "wal", ...)`."""

    def run_module(module: str, *args: str, extra: dict[str, str] | None = None, flags: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
        return subprocess.run(
            [sys.executable, *flags, "-m", module, *args],
            env={**env, **(extra or {})},
            cwd=pg_wal.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run_module


def wait_until(check: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def rows(ctx: Context) -> dict[str, WalSegment]:
    with ctx.sessions() as session:
        return {row.name: row for row in session.query(WalSegment)}


def object_path(ctx: Context, name: str) -> Path:
    return ctx.settings.home / "repo" / Kind.WAL / names.object_name(SOURCE, name)


def test_the_fast_path_archives_exactly_as_the_full_command_without_loading_the_cli(
    ctx: Context, run: Run, write_segment: WriteSegment
) -> None:
    synchronous = {"WAL_PUSH_ASYNC": "false"}
    fast_file, full_file = write_segment(3), write_segment(4)
    fast = run(
        "app.cli.entry",
        "wal",
        "push",
        f"pg_wal/{fast_file.name}",
        extra=synchronous,
        flags=("-X", "importtime"),
    )
    full = run("app.cli.main", "wal", "push", f"pg_wal/{full_file.name}", extra=synchronous)
    assert fast.returncode == full.returncode == 0, fast.stderr + full.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in fast.stderr.splitlines() if "|" in line}
    assert not imported & {"typer", "rich", "click", "celery", "kombu", "boto3", "botocore", "pyfastcdc"}
    assert {"sqlalchemy", "pydantic_settings"} <= imported  # it did the whole push itself

    recorded = rows(ctx)
    assert set(recorded) == {fast_file.name, full_file.name}
    for path in (fast_file, full_file):
        row = recorded[path.name]
        assert (row.kind, row.timeline, row.segno, row.size) == (
            "segment",
            1,
            names.parse(path.name).seg,
            len(path.read_bytes()),
        )
        assert row.content_hash == ctx.repository.chunk_ids.of(path.read_bytes())
        assert row.key_id == ctx.repository.keyring.current_key_id.hex()
        assert row.stored_size == object_path(ctx, path.name).stat().st_size
        assert row.written_at is not None and row.archived_at is not None
        meta, data = segment.read(ctx.repository, SOURCE, path.name)
        assert data == path.read_bytes() and meta.hash == row.content_hash
    with ctx.sessions() as session:
        archive = session.query(WalArchive).one()
    assert archive.newest_segment == full_file.name and archive.system_identifier is not None


def test_an_identical_push_succeeds_and_other_content_fails_loudly(
    ctx: Context, run: Run, write_segment: WriteSegment
) -> None:
    synchronous = {"WAL_PUSH_ASYNC": "false"}
    path = write_segment(3)
    first = run("app.cli.entry", "wal", "push", f"pg_wal/{path.name}", extra=synchronous)
    assert (first.returncode, first.stdout, first.stderr) == (0, "", "")
    before = object_path(ctx, path.name).read_bytes()
    again = run("app.cli.entry", "wal", "push", f"pg_wal/{path.name}", extra=synchronous)
    assert (again.returncode, again.stderr) == (0, "")

    write_segment(3, make_segment(3, fill=b"other content "))
    refused = run("app.cli.entry", "wal", "push", f"pg_wal/{path.name}", extra=synchronous)
    assert refused.returncode == 14
    assert refused.stderr.startswith(f"error: WAL file {path.name} of source {SOURCE}")
    assert "different content" in refused.stderr and "  hint: " in refused.stderr
    assert object_path(ctx, path.name).read_bytes() == before and list(rows(ctx)) == [path.name]


@pytest.mark.slow
def test_archive_commands_are_answered_by_the_pusher_they_start(
    ctx: Context, run: Run, write_segment: WriteSegment, spool: PushSpool
) -> None:
    status = spool.status_dir

    def archive_command(path: Path) -> subprocess.CompletedProcess[str]:
        """As PostgreSQL's archiver: the file is ready; push it; on success, mark it done."""
        done = run("app.cli.entry", "wal", "push", f"pg_wal/{path.name}")
        if done.returncode == 0:
            os.rename(status / f"{path.name}.ready", status / f"{path.name}.done")
        return done

    first = write_segment(3, ready=True)
    assert archive_command(first).returncode == 0
    wait_until(spool.pusher)  # the first call pushed the file itself, then became the pusher

    later = [write_segment(segno, ready=True) for segno in (4, 5, 6)]
    history = spool.wal_dir / "00000002.history"
    history.write_text("1\t0/6000000\tno recovery target specified\n")
    (status / "00000002.history.ready").touch()
    wait_until(lambda: all(spool.ack(p.name) for p in [*later, history]))  # archived ahead
    for path in [history, *later]:
        answered = archive_command(path)
        assert (answered.returncode, answered.stderr) == (0, ""), answered.stderr
    assert set(rows(ctx)) == {first.name, history.name, *(p.name for p in later)}
    assert rows(ctx)[history.name].kind == "history"
    for path in [first, history, *later]:
        assert segment.read(ctx.repository, SOURCE, path.name)[1] == path.read_bytes()
    wait_until(lambda: spool.noted() == [])  # acknowledgements go once PostgreSQL marked files done

    # asked again for an archived file (a lost acknowledgement): success, recorded once
    (status / f"{later[0].name}.done").rename(status / f"{later[0].name}.ready")
    assert archive_command(later[0]).returncode == 0
    # other content under an archived name: the pusher does not acknowledge it, the call fails loudly
    before = object_path(ctx, first.name).read_bytes()
    write_segment(3, make_segment(3, fill=b"other content "), ready=True)
    refused = archive_command(first)
    assert refused.returncode == 14 and "different content" in refused.stderr
    assert spool.ack(first.name) is None
    assert object_path(ctx, first.name).read_bytes() == before
    assert len(rows(ctx)) == 5


@pytest.mark.slow
def test_a_pusher_killed_after_storing_leaves_no_ack_and_the_next_call_records_the_file(
    ctx: Context, run: Run, env: dict[str, str], write_segment: WriteSegment, spool: PushSpool, pg_wal: Path
) -> None:
    pusher = subprocess.Popen(
        [sys.executable, "-m", "app.wal.pusher", "--source", SOURCE, "--wal-dir", str(pg_wal)],
        env=env,
        cwd=pg_wal.parent,
    )
    try:
        wait_until(lambda: spool.pusher() and (spool.dir / ".wake").exists())  # up, keys open
        catalog = sqlite3.connect(ctx.settings.home / "catalog.sqlite3", timeout=30, isolation_level=None)
        try:
            catalog.execute("BEGIN IMMEDIATE")  # the pusher stores the file, then waits to record it
            path = write_segment(3, ready=True)
            spool.wake()
            wait_until(object_path(ctx, path.name).exists)
            time.sleep(0.3)
            assert spool.ack(path.name) is None
            pusher.kill()
            pusher.wait(10)
        finally:
            catalog.execute("ROLLBACK")
            catalog.close()
    finally:
        if pusher.poll() is None:
            pusher.kill()
            pusher.wait(10)
    stored = object_path(ctx, path.name).read_bytes()
    assert spool.ack(path.name) is None and rows(ctx) == {} and spool.pusher() is None

    retried = run("app.cli.entry", "wal", "push", f"pg_wal/{path.name}")
    assert (retried.returncode, retried.stderr) == (0, "")
    assert list(rows(ctx)) == [path.name] and object_path(ctx, path.name).read_bytes() == stored
    assert segment.read(ctx.repository, SOURCE, path.name)[1] == path.read_bytes()
