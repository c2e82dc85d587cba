"""Files that change between the walk and the read (docs/BACKUP.md, "Files that change under the
backup"): a vanished file, a file replaced by a FIFO, a directory swapped for a symlink that leads out
of the source, a file replaced by another. Each is a named warning and the backup is `partial`: never a
failed backup, a hang, or a read outside the source. In one process (threads), on worker processes of
this machine, and as a cluster runs it (prepare, units, finalize as separate steps)."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.backup import engine
from app.backup.finalize import finalize_backup
from app.backup.hooks import SourceHooks, hooks_for, load_source
from app.backup.prepare import prepare_backup
from app.backup.result import BackupResult
from app.backup.unit import run_unit
from app.system import BackupSystem
from tests.support.system import Factory

SECRET = b"OUTSIDE-THE-SOURCE " * 100
MODES = {
    "threads": {"backup_processes": 1},
    "processes": {"backup_processes": 2, "backup_processes_min_bytes": 1 << 20, "backup_unit_bytes": 1 << 20},
    "cluster": {"backup_unit_bytes": 1 << 20},
}


class ChangingWalk:
    """The source's own hooks, with `change` run on the tree right after the walk, before any read."""

    def __init__(self, inner: SourceHooks, change: Callable[[], None]) -> None:
        self.inner, self.change = inner, change
        self.kind = inner.kind

    def begin(self, ctx: Any, backup_id: str) -> None:
        self.inner.begin(ctx, backup_id)

    def walk(self, ctx: Any, watch: Any = None, reusable: Any = None) -> Any:
        found = self.inner.walk(ctx, watch, reusable)
        self.change()
        return found

    def finish(self, ctx: Any, backup_id: str, make_writer: Any) -> None:
        self.inner.finish(ctx, backup_id, make_writer)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def fifo_guard() -> Iterator[list[Path]]:
    """A safety net, not an assertion: a reader blocked on a FIFO's open (the defect) is released after
    a minute, so the test fails instead of hanging."""
    fifos: list[Path] = []
    done = threading.Event()

    def release() -> None:
        while not done.wait(60):
            for fifo in fifos:
                with contextlib.suppress(OSError):
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    yield fifos
    done.set()
    thread.join()


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    src, outside = tmp_path / "src", tmp_path / "outside"
    (src / "sub").mkdir(parents=True)
    outside.mkdir()
    (src / "keep.txt").write_bytes(b"kept as it was\n")
    (src / "gone.txt").write_bytes(b"deleted after the walk\n")
    (src / "pipe.txt").write_bytes(b"replaced by a FIFO after the walk\n")
    (src / "swap.txt").write_bytes(b"the old file\n")
    (src / "sub" / "secret.txt").write_bytes(b"inside " * 100)
    (outside / "secret.txt").write_bytes(SECRET)
    for i in range(3):  # several units, so worker processes read them
        (src / f"big{i}.bin").write_bytes(os.urandom(3 << 19))
    return src, outside


def _vanish(src: Path, outside: Path, fifos: list[Path]) -> None:
    (src / "gone.txt").unlink()


def _fifo(src: Path, outside: Path, fifos: list[Path]) -> None:
    (src / "pipe.txt").unlink()
    os.mkfifo(src / "pipe.txt")
    fifos.append(src / "pipe.txt")


def _symlinked_dir(src: Path, outside: Path, fifos: list[Path]) -> None:
    shutil.rmtree(src / "sub")
    os.symlink(outside, src / "sub")


def _swap(src: Path, outside: Path, fifos: list[Path]) -> None:
    (src / "swap.tmp").write_bytes(b"the new file\n")
    os.replace(src / "swap.tmp", src / "swap.txt")


#: Each change after the walk, the path it names, the warning's code and a word of its message.
CHANGES: dict[str, tuple[Callable[[Path, Path, list[Path]], None], str, str, str]] = {
    "vanished": (_vanish, "gone.txt", "vanished", "vanished"),
    "fifo": (_fifo, "pipe.txt", "replaced", "FIFO"),
    "symlinked-dir": (_symlinked_dir, "sub/secret.txt", "replaced", "symbolic link"),
    "swapped": (_swap, "swap.txt", "swapped", "another file"),
}


def _backup(
    system: BackupSystem, mode: str, hooks: ChangingWalk, monkeypatch: pytest.MonkeyPatch
) -> BackupResult:
    if mode != "cluster":
        monkeypatch.setattr(engine, "hooks_for", lambda source: hooks)
        return system.create_full_backup("docs")
    ctx = system.context  # the three steps the cluster's tasks run (tasks/backup.py), here in turn
    prepared = prepare_backup(ctx, "docs", "full", cluster=True, hooks=hooks)
    for number in prepared.units:
        run_unit(ctx, prepared.backup_id, number, cluster=True)
    return finalize_backup(ctx, prepared.backup_id)


@pytest.mark.parametrize("change", list(CHANGES))
@pytest.mark.parametrize("mode", list(MODES))
def test_a_file_changed_after_the_walk_is_named_and_the_backup_is_partial(
    make_system: Factory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fifo_guard: list[Path],
    mode: str,
    change: str,
) -> None:
    src, outside = _tree(tmp_path)
    system = make_system(**MODES[mode])
    system.add_source("docs", src)
    alter, path, code, word = CHANGES[change]
    hooks = ChangingWalk(
        hooks_for(load_source(system.context, "docs")), lambda: alter(src, outside, fifo_guard)
    )
    result = _backup(system, mode, hooks, monkeypatch)

    assert result.state == "partial"
    assert [(w["path"], w.get("code")) for w in result.warnings] == [(path, code)]
    assert word in result.warnings[0]["warning"]
    shown = system.show_backup(result.id)
    assert shown["state"] == "partial" and shown["warnings"] == result.warnings
    if mode == "processes":
        assert len(shown["units"]) >= 2
        assert os.getpid() not in {int(str(u["worker"]).rsplit(":", 1)[1]) for u in shown["units"]}

    out = tmp_path / "out"
    system.restore(result.id, out)
    assert (out / "keep.txt").read_bytes() == b"kept as it was\n"
    for i in range(3):
        assert (out / f"big{i}.bin").read_bytes() == (src / f"big{i}.bin").read_bytes()
    if change == "swapped":
        assert (out / "swap.txt").read_bytes() == b"the new file\n"  # the file found there, read safely
    else:
        assert not (out / path).exists()
    for found in out.rglob("*"):  # nothing from outside the source
        assert not found.is_file() or SECRET not in found.read_bytes()
