"""A source that comes back empty or much smaller (an unmounted disk, a deleted share) is a named
warning and a `partial` backup unless the user confirms the shrink (app/backup/shrink.py), and
`backup run` exits 16 for a partial backup, 0 only for a complete one."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from tests.support.system import Factory

EXE = [sys.executable, "-m", "app.cli.main"]


def _files(src: Path, count: int) -> Path:
    src.mkdir(exist_ok=True)
    for i in range(count):
        (src / f"f{i}.bin").write_bytes(os.urandom(4096))
    return src


def test_a_source_that_shrank_past_the_setting_is_partial_unless_confirmed(
    make_system: Factory, tmp_path: Path
) -> None:
    src = _files(tmp_path / "src", 4)
    system = make_system()  # BACKUP_SHRINK_WARN_PERCENT: 50 by default
    system.add_source("docs", src)
    first = system.create_full_backup("docs")
    assert first.state == "complete" and first.warnings == []
    for i in range(3):  # 75 % of the files and bytes gone
        (src / f"f{i}.bin").unlink()

    shrunk = system.create_incremental_backup("docs")
    assert shrunk.state == "partial"
    assert [(w["path"], w["code"]) for w in shrunk.warnings] == [(".", "shrunk")]
    assert first.id in shrunk.warnings[0]["warning"] and "--allow-shrink" in shrunk.warnings[0]["warning"]

    confirmed = system.create_incremental_backup("docs", allow_shrink=True)
    assert confirmed.state == "complete"
    assert [w["code"] for w in confirmed.warnings] == ["shrink_allowed"]
    # compared with the last complete backup, which is now the confirmed one: no warning
    assert system.create_incremental_backup("docs").warnings == []


def test_a_shrink_within_the_setting_is_complete(make_system: Factory, tmp_path: Path) -> None:
    src = _files(tmp_path / "src", 4)
    system = make_system(backup_shrink_warn_percent=80)
    system.add_source("docs", src)
    system.create_full_backup("docs")
    for i in range(3):
        (src / f"f{i}.bin").unlink()
    assert system.create_incremental_backup("docs").state == "complete"  # 75 % < 80 %
    (src / "f3.bin").unlink()
    assert system.create_incremental_backup("docs").state == "partial"  # to nothing: always named


def test_backup_run_exits_16_for_a_partial_backup_and_names_why(tmp_path: Path) -> None:
    src = _files(tmp_path / "src", 3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "DATABASE_URL", "EQUISPLIT"))}
    env.update(
        EQUISPLIT_DR_HOME=str(tmp_path / "home"),
        BACKUP_ENCRYPTION_KEY=secrets.token_hex(32),
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        COLUMNS="400",
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*EXE, *args], env=env, capture_output=True, text=True, timeout=120)

    assert cli("init").returncode == 0
    assert cli("source", "add", "docs", "--path", str(src)).returncode == 0
    assert cli("backup", "run", "-s", "docs", "-t", "full").returncode == 0
    for path in src.iterdir():  # the disk was not mounted
        path.unlink()
    partial = cli("backup", "run", "-s", "docs")
    assert partial.returncode == 16, partial.stderr
    assert "partial" in partial.stdout
    assert "shrank" in partial.stderr and "--allow-shrink" in partial.stderr
    assert "partial:" in partial.stderr
    as_json = cli("backup", "run", "-s", "docs", "--json")
    assert as_json.returncode == 16
    assert json.loads(as_json.stdout)["state"] == "partial"  # stdout stays JSON; the warning is on stderr
    assert "shrank" in as_json.stderr
    confirmed = cli("backup", "run", "-s", "docs", "--allow-shrink")
    assert confirmed.returncode == 0, confirmed.stderr
    assert "complete" in confirmed.stdout
