"""Key rotation that fails or is killed at each step, then retried: no key is lost, every backup still
restores (docs/KEYS.md). The CLI runs as users run it, in subprocesses; tests/support/strike.py strikes
one step of the rotation down (SIGKILL, or the error the step would raise)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import load_settings
from app.system import BackupSystem
from tests.integration.test_cli import run
from tests.support.trees import assert_same_tree, make_tree

pytestmark = pytest.mark.slow

#: Every step of a rotation, struck down before or after it; `kill` is SIGKILL, `fail` the step's error.
STRIKES = [
    "put:keys/keyring.next:before:kill",  # the new key is written, storage untouched
    "put:keys/keyring.next:after:kill",
    "put:keys/keyring:after:fail",  # the keyring landed, its answer was lost
    "put:keys/keyring:after:kill",
    "replace:master.key:after:kill",
    "delete:keys/keyring.next:before:kill",
    "audit:keys.rotated:before:fail",  # a catalog write error
    "audit:keys.rotated:before:kill",
]


@pytest.fixture
def home_env(tmp_path: Path) -> dict[str, str]:
    """The embedded defaults with the key file `init` generates: no key in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "DATABASE_URL", "EQUISPLIT"))}
    env.update(EQUISPLIT_DR_HOME=str(tmp_path / "home"), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return env


def struck(env: dict[str, str], spec: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.support.strike", *args],
        env={**env, "EQUISPLIT_TEST_STRIKE": spec},
        capture_output=True,
        text=True,
        timeout=120,
    )


def system_at(home: Path) -> BackupSystem:
    """A new process's view of the home (a new Context, as a new command has): embedded defaults."""
    return BackupSystem(
        load_settings(
            equisplit_dr_home=home,
            database_url=None,
            backup_storage_url=None,
            backup_encryption_key=None,
            backup_encryption_key_file=None,
        )
    )


def backup(env: dict[str, str], kind: str) -> str:
    made = json.loads(run(env, "backup", "run", "-s", "docs", "-t", kind, "--json").stdout)
    assert made["state"] == "complete"
    return str(made["id"])


def test_a_rotation_struck_at_any_step_then_retried_loses_no_backup(
    home_env: dict[str, str], tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    home = Path(home_env["EQUISPLIT_DR_HOME"])
    key_file, pending = home / "master.key", home / "master.key.next"
    with system_at(home) as system:
        system.init()
        system.add_source("docs", src)
        backups = [system.create_full_backup("docs").id]
    for number, spec in enumerate(STRIKES):
        stopped = struck(home_env, spec, "keys", "rotate")
        expected = -signal.SIGKILL if spec.endswith("kill") else 7 if "audit" in spec else 4
        assert stopped.returncode == expected, (spec, stopped.stdout + stopped.stderr)
        if number % 2:  # the obvious retry
            retried = run(home_env, "keys", "rotate", ok=False)
            assert retried.returncode == 0, f"retry after {spec}:\n{retried.stdout}\n{retried.stderr}"
            assert not pending.exists(), f"a retried rotation left {pending} after {spec}"
        # else: the next command, whatever it is, opens the repository (and finishes a switched rotation)
        (src / "docs" / f"after-{number}.txt").write_text(spec)
        with system_at(home) as system:
            made = system.create_incremental_backup("docs")
        assert made.state == "complete", spec
        backups.append(made.id)
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, spec
    run(home_env, "keys", "rotate")  # a last, clean one finishes whatever is pending
    assert not pending.exists() and not (home / "repo" / "keys" / "keyring.next").exists()
    for number, backup_id in enumerate(backups):
        out = tmp_path / f"out{number}"
        with system_at(home) as system:
            system.restore(backup_id, out)
        assert (out / "docs" / "ledger.csv").read_bytes() == (src / "docs" / "ledger.csv").read_bytes()
    assert_same_tree(src, tmp_path / f"out{len(backups) - 1}")


def test_a_rotation_to_a_given_key_killed_after_the_switch_is_named_and_finished_by_a_retry(
    home_env: dict[str, str], tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    old, new = secrets.token_hex(32), secrets.token_hex(32)
    env = {**home_env, "BACKUP_ENCRYPTION_KEY": old}
    run(env, "init")
    run(env, "source", "add", "docs", "--path", str(src))
    first = backup(env, "full")
    rotate_env = {**env, "BACKUP_NEW_ENCRYPTION_KEY": new}
    assert struck(rotate_env, "put:keys/keyring:after:kill", "keys", "rotate").returncode == -signal.SIGKILL

    refused = run(env, "restore", first, "--target", str(tmp_path / "x"), ok=False)
    assert refused.returncode == 3 and "wrong master key" in refused.stderr
    assert "keys/keyring.next" in refused.stderr and "BACKUP_NEW_ENCRYPTION_KEY" in refused.stderr
    assert old not in refused.stderr + refused.stdout and new not in refused.stderr + refused.stdout
    assert not (tmp_path / "x").exists()

    retried = run(rotate_env, "keys", "rotate", ok=False)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "finished a key rotation that was interrupted" in retried.stdout
    assert not (Path(home_env["EQUISPLIT_DR_HOME"]) / "repo" / "keys" / "keyring.next").exists()
    run({**env, "BACKUP_ENCRYPTION_KEY": new}, "restore", first, "--target", str(tmp_path / "out"))
    assert_same_tree(src, tmp_path / "out")


def test_init_without_a_key_beside_an_existing_repository_writes_no_key_file(
    home_env: dict[str, str], tmp_path: Path
) -> None:
    home = Path(home_env["EQUISPLIT_DR_HOME"])
    run(home_env, "init")
    kept = tmp_path / "kept.key"
    os.replace(home / "master.key", kept)  # the key is elsewhere now (another machine, a vault)
    refused = run(home_env, "init", ok=False)
    assert refused.returncode == 3 and "already holds a repository" in refused.stderr
    assert not (home / "master.key").exists(), "init wrote a fresh key that cannot open the repository"
    run({**home_env, "BACKUP_ENCRYPTION_KEY_FILE": str(kept)}, "init")
