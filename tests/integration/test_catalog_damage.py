"""A damaged SQLite catalog, or one the CLI's OS user cannot write, as users meet it through the CLI:
exit 7 naming the file and the fix, never a traceback; `catalog rebuild` mends the damaged one."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_cli import run
from tests.support.cli import cli_env_for
from tests.support.pgcluster import PG_USER, python_for_postgres
from tests.support.trees import assert_same_tree, make_tree

COMMANDS = [
    ("backup", "list"),
    ("source", "list"),
    ("backup", "status"),
    ("backup", "show", "latest", "--source", "docs"),
    ("backup", "run", "--source", "docs", "--type", "incremental"),
    ("init",),
]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return cli_env_for(tmp_path / "home")


def _backed_up(env: dict[str, str], tmp_path: Path) -> tuple[Path, Path, list[dict[str, object]]]:
    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    run(env, "init")
    run(env, "source", "add", "docs", "--path", str(src))
    run(env, "backup", "run", "-s", "docs", "-t", "full")
    (src / "late.txt").write_text("after the full backup")
    run(env, "backup", "run", "-s", "docs", "-t", "incremental")
    listed = json.loads(run(env, "backup", "list", "--json").stdout)
    return src, Path(env["EQUISPLIT_DR_HOME"]) / "catalog.sqlite3", listed


def _overwrite_table_pages(catalog: Path, *tables: str) -> None:
    """Overwrite the root pages of `tables`: damage in the middle of the file, the header left sound."""
    with sqlite3.connect(catalog) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        roots = dict(
            conn.execute(
                f"SELECT name, rootpage FROM sqlite_master WHERE name IN ({','.join('?' * len(tables))})",
                tables,
            ).fetchall()
        )
    conn.close()
    assert set(roots) == set(tables)
    with catalog.open("r+b") as f:
        for page in roots.values():
            assert page > 1
            f.seek((page - 1) * page_size)
            f.write(b"\xa5" * page_size)


def _check_refused(env: dict[str, str], catalog: Path, why: str, commands: list[tuple[str, ...]]) -> None:
    for command in commands:
        proc = run(env, *command, ok=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 7, f"{command} exited {proc.returncode}:\n{out}"
        assert "Traceback" not in out, f"{command}:\n{out}"
        assert str(catalog) in out.replace("\n", "") and why in out, f"{command}:\n{out}"
        assert "equisplit-dr catalog rebuild" in out, f"{command}:\n{out}"


@pytest.mark.parametrize("damage", ["pages-overwritten", "not-sqlite"])
def test_a_damaged_catalog_is_exit_7_and_rebuild_sets_it_aside(
    cli_env: dict[str, str], tmp_path: Path, damage: str
) -> None:
    src, catalog, before = _backed_up(cli_env, tmp_path)
    if damage == "pages-overwritten":
        _overwrite_table_pages(catalog, "backups", "sources", "jobs")
        why = "malformed"
    else:
        for suffix in ("-wal", "-shm"):
            Path(f"{catalog}{suffix}").unlink(missing_ok=True)
        catalog.write_bytes(b"this is not an SQLite database at all\n" * 200)
        why = "not a database"
    damaged_bytes = catalog.read_bytes()
    # Every command on the first damage; a few on the second (each CLI start costs a second or two).
    _check_refused(cli_env, catalog, why, COMMANDS if damage == "pages-overwritten" else COMMANDS[::2])

    proc = run(cli_env, "catalog", "rebuild", "--json")
    report = json.loads(proc.stdout)
    aside = Path(report["damaged_catalog"])
    assert aside.parent == catalog.parent and aside.name.startswith("catalog.sqlite3.damaged-")
    assert aside.read_bytes() == damaged_bytes  # kept, not deleted
    assert str(aside) in proc.stderr.replace("\n", "")
    assert report["backups"] == 2 and report["unreadable"] == []
    assert json.loads(run(cli_env, "backup", "list", "--json").stdout) == before
    run(cli_env, "restore", "latest", "--source", "docs", "--target", str(tmp_path / "out"))
    assert_same_tree(src, tmp_path / "out")
    run(cli_env, "backup", "run", "-s", "docs", "-t", "incremental")  # the new catalog takes new backups


# Permissions: the CLI as a non-root user (PostgreSQL's OS user, which runs archive_command) ---------


@pytest.fixture
def shared_home() -> Iterator[Path]:
    """A home under /tmp that another OS user can reach (pytest's tmp_path is 0700 root)."""
    if os.geteuid() != 0:
        pytest.fail("these tests create files as root and run the CLI as another user: run as root")
    home = Path(tempfile.mkdtemp(prefix="eqdr-perm-"))
    home.chmod(0o755)
    yield home
    shutil.rmtree(home, ignore_errors=True)


def run_as_other_user(
    env: dict[str, str], *args: str, module: str = "app.cli.main"
) -> subprocess.CompletedProcess[str]:
    python = python_for_postgres()
    keep = {k: v for k, v in env.items() if k.startswith(("EQUISPLIT", "BACKUP_")) or k == "COLUMNS"}
    command = ["runuser", "-u", PG_USER, "--", "env", "-i", f"PYTHONPATH={python.pythonpath}"]
    command += [f"{k}={v}" for k, v in keep.items()]
    command += [python.executable, "-m", module, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/")


def _check_permission_error(
    env: dict[str, str], named: Path, commands: list[tuple[str, ...]], module: str = "app.cli.main"
) -> None:
    for command in commands:
        proc = run_as_other_user(env, *command, module=module)
        out = (proc.stdout + proc.stderr).replace("\n", "")
        assert proc.returncode == 7, f"{command} exited {proc.returncode}:\n{out}"
        assert "Traceback" not in out and "DATABASE_URL and that the database is up" not in out, out
        assert "permission denied" in out.lower() and str(named) in out and PG_USER in out, out
        assert "chown" in out, out


@pytest.mark.parametrize("case", ["root-file-root-dir", "root-file-open-dir", "read-only-dir"])
def test_a_catalog_the_os_user_cannot_write_is_named_with_the_user_and_the_fix(
    cli_env: dict[str, str], shared_home: Path, case: str
) -> None:
    env = {**cli_env, "EQUISPLIT_DR_HOME": str(shared_home / "home")}
    run(env, "init")
    run(env, "source", "add", "docs", "--path", str(shared_home))
    home = shared_home / "home"
    catalog = home / "catalog.sqlite3"
    home.chmod(0o755)
    catalog.chmod(0o644)
    reads = [("backup", "list"), ("source", "list"), ("backup", "status")]
    writes = [("source", "add", "other", "--path", str(shared_home))]
    if case == "root-file-root-dir":  # root's file in root's 0755 directory: nothing can be opened
        _check_permission_error(env, catalog, [reads[0], *writes, ("init",)])
        _check_permission_error(env, home, reads[:1])
        # What PostgreSQL's archive_command runs, as the server's OS user (the fast path of `wal push`).
        segment = shared_home / "000000010000000000000001"
        segment.write_bytes(bytes(1 << 20))
        segment.chmod(0o644)
        push = [("wal", "push", str(segment), "--source", "docs")]
        _check_permission_error(env, catalog, push, module="app.cli.entry")
    elif case == "root-file-open-dir":  # the directory lets the user create -wal/-shm: reads work
        home.chmod(0o777)
        assert run_as_other_user(env, "backup", "list").returncode == 0
        _check_permission_error(env, catalog, writes)
    else:  # the user owns the file, but SQLite cannot create its -wal and -shm beside it
        shutil.chown(catalog, PG_USER)
        shutil.chown(home, PG_USER)
        home.chmod(0o555)
        _check_permission_error(env, home, [*reads[1:], *writes])


def test_a_catalog_behind_a_directory_the_os_user_cannot_enter_names_that_directory(
    cli_env: dict[str, str], shared_home: Path
) -> None:
    private = shared_home / "private"  # like /root: 0700, so the user cannot reach anything inside
    env = {**cli_env, "EQUISPLIT_DR_HOME": str(private / "home")}
    run(env, "init")
    private.chmod(0o700)
    _check_permission_error(env, private, [("backup", "list")])
    # A home that does not exist yet, in a directory the user cannot write: the directory to create.
    env = {**cli_env, "EQUISPLIT_DR_HOME": str(shared_home / "new" / "home")}
    (shared_home / "new").mkdir(mode=0o755)
    _check_permission_error(env, shared_home / "new" / "home", [("source", "list")])
