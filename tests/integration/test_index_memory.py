"""A backup process's memory does not grow with the chunk index (issue #14; DESIGN invariant 11).

The same small incremental runs as a user runs it (the CLI in a subprocess) against two catalogs: one
whose index holds only the tree's own chunks, one that also holds a million synthetic chunk rows. Each
child's peak RSS comes from wait4, through a small launcher (tests/support/peakrss.py: forked straight
from pytest, a child would report at least pytest's own RSS, and the two runs could not differ). Loading the index into a set cost ~180 MB per million chunks; asked
in batches, the two runs differ by noise only."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import pytest

from tests.support.peakrss import run_with_peak_rss

EXE = [sys.executable, "-m", "app.cli.main"]
SYNTHETIC_CHUNKS = 1_000_000
#: Far below what a set of a million ids costs (~180 MB), far above run-to-run noise (a few MB).
MARGIN_MB = 60


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "DATABASE_URL", "EQUISPLIT"))}
    env.update(
        EQUISPLIT_DR_HOME=str(home),
        BACKUP_ENCRYPTION_KEY=os.urandom(32).hex(),
        BACKUP_THREADS="2",
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    return env


def _cli(env: dict[str, str], *args: str) -> int:
    """Run the CLI; its peak RSS in KiB (the child's, or a descendant's if larger)."""
    returncode, peak_kib, stderr = run_with_peak_rss([*EXE, *args], env)
    assert returncode == 0, stderr
    return peak_kib


def _fill_index(catalog: Path, count: int) -> None:
    """`count` synthetic chunk rows in one fake pack, generated inside SQLite (a few seconds)."""
    with sqlite3.connect(catalog) as db:
        db.execute(
            "INSERT INTO packs (id, size, chunk_count, backup_id, created_at) "
            "VALUES (?, 0, ?, NULL, '2026-01-01 00:00:00')",
            ("f" * 64, count),
        )
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO chunks (id, pack_id, \"offset\", length, raw_length) "
            "SELECT lower(hex(randomblob(32))), ?, 0, 0, 0 FROM n",
            (count, "f" * 64),
        )
        assert db.execute("SELECT count(*) FROM chunks").fetchone()[0] > count


def _incremental_peak_kib(tmp_path: Path, name: str, synthetic: int) -> int:
    src = tmp_path / f"src-{name}"
    src.mkdir()
    for i in range(40):
        (src / f"doc{i:02d}.txt").write_bytes(os.urandom(8000))
    (src / "big.bin").write_bytes(os.urandom(3 << 20))
    env = _env(tmp_path / f"home-{name}")
    _cli(env, "init")
    _cli(env, "source", "add", "docs", "--path", str(src))
    _cli(env, "backup", "run", "-s", "docs", "-t", "full")
    if synthetic:
        _fill_index(tmp_path / f"home-{name}" / "catalog.sqlite3", synthetic)
    with (src / "doc00.txt").open("ab") as changed:
        changed.write(os.urandom(3000))
    (src / "new.bin").write_bytes(os.urandom(1 << 20))
    return _cli(env, "backup", "run", "-s", "docs", "-t", "incremental")


@pytest.mark.slow
def test_an_incremental_costs_the_same_memory_whatever_the_index_holds(tmp_path: Path) -> None:
    empty = _incremental_peak_kib(tmp_path, "empty", 0)
    large = _incremental_peak_kib(tmp_path, "large", SYNTHETIC_CHUNKS)
    grown_mb = (large - empty) / 1024
    print(f"peak RSS of the incremental: {empty / 1024:.0f} MB (empty index), {large / 1024:.0f} MB (+{SYNTHETIC_CHUNKS})")
    assert grown_mb < MARGIN_MB, (
        f"peak RSS {large // 1024} MB with {SYNTHETIC_CHUNKS} indexed chunks, {empty // 1024} MB with an "
        f"empty index: the backup process grows with the repository"
    )
