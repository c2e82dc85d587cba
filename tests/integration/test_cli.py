"""The `equisplit-dr` command as users run it: subprocesses, exit codes, JSON, interrupted backups."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.trees import assert_same_tree, make_tree

EXE = [sys.executable, "-m", "app.cli.main"]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "DATABASE_URL", "EQUISPLIT"))}
    env.update(
        EQUISPLIT_DR_HOME=str(tmp_path / "home"),
        BACKUP_ENCRYPTION_KEY=secrets.token_hex(32),
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        COLUMNS="200",
    )
    return env


def run(
    env: dict[str, str],
    *args: str,
    ok: bool = True,
    prefix: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*(prefix or []), *EXE, *args], env=env, capture_output=True, text=True, timeout=120
    )
    if ok:
        assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_cli_end_to_end_with_json(cli_env: dict[str, str], tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    run(cli_env, "init")
    run(cli_env, "init")  # idempotent
    run(cli_env, "source", "add", "docs", "--path", str(src))
    assert json.loads(run(cli_env, "source", "list", "--json").stdout)[0]["name"] == "docs"
    full = json.loads(run(cli_env, "backup", "run", "--source", "docs", "--type", "full", "--json").stdout)
    for field in (
        "id",
        "source",
        "type",
        "state",
        "started_at",
        "finished_at",
        "bytes_read",
        "bytes_new",
        "bytes_stored",
    ):
        assert field in full
    assert full["type"] == "full" and full["state"] == "complete" and full["bytes_read"] > 0
    listed = json.loads(run(cli_env, "backup", "list", "--source", "docs", "--json").stdout)
    assert [b["id"] for b in listed] == [full["id"]]
    shown = json.loads(run(cli_env, "backup", "show", "latest", "--source", "docs", "--json").stdout)
    assert shown["id"] == full["id"]
    dry = json.loads(
        run(
            cli_env,
            "restore",
            "latest",
            "--source",
            "docs",
            "--target",
            str(tmp_path / "o"),
            "--dry-run",
            "--json",
        ).stdout
    )
    assert dry["files"] == 7 and not (tmp_path / "o").exists()
    run(cli_env, "restore", full["id"], "--target", str(tmp_path / "out"))
    assert_same_tree(src, tmp_path / "out")
    refused = run(cli_env, "restore", full["id"], "--target", str(tmp_path / "out"), ok=False)
    assert refused.returncode == 11 and "not empty" in refused.stderr and "--overwrite" in refused.stderr


def test_cli_errors_have_exit_codes_and_hide_secrets(cli_env: dict[str, str], tmp_path: Path) -> None:
    short = "ab" * 16
    proc = run({**cli_env, "BACKUP_ENCRYPTION_KEY": short}, "init", ok=False)
    assert proc.returncode == 3 and "128 bits" in proc.stderr and short not in proc.stderr + proc.stdout
    proc = run({**cli_env, "BACKUP_RETENTION_DAILY": "thirty"}, "backup", "list", ok=False)
    assert proc.returncode == 2 and "BACKUP_RETENTION_DAILY" in proc.stderr
    run(cli_env, "init")
    proc = run(cli_env, "backup", "run", "--source", "nope", "--type", "full", ok=False)
    assert proc.returncode == 8 and "nope" in proc.stderr
    proc = run(cli_env, "backup", "run", "--source", "nope", "--type", "weekly", ok=False)
    assert proc.returncode != 0


def test_keys_rotate_and_catalog_rebuild(cli_env: dict[str, str], tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    run(cli_env, "init")
    run(cli_env, "source", "add", "docs", "--path", str(src))
    first = json.loads(run(cli_env, "backup", "run", "-s", "docs", "-t", "full", "--json").stdout)
    new_key = secrets.token_hex(32)
    run({**cli_env, "BACKUP_NEW_ENCRYPTION_KEY": new_key}, "keys", "rotate")
    stale = run(cli_env, "backup", "list", ok=False)  # listing needs only the catalog
    assert stale.returncode == 0
    refused = run(cli_env, "restore", first["id"], "--target", str(tmp_path / "x"), ok=False)
    assert refused.returncode == 3 and "wrong master key" in refused.stderr
    env = {**cli_env, "BACKUP_ENCRYPTION_KEY": new_key}
    second = json.loads(run(env, "backup", "run", "-s", "docs", "-t", "incremental", "--json").stdout)

    catalog = Path(cli_env["EQUISPLIT_DR_HOME"]) / "catalog.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(str(catalog) + suffix).unlink(missing_ok=True)
    run(env, "init")  # a fresh, empty catalog beside the existing repository
    assert json.loads(run(env, "backup", "list", "--json").stdout) == []
    rebuilt = json.loads(run(env, "catalog", "rebuild", "--json").stdout)
    assert rebuilt["backups"] == 2 and rebuilt["packs"] >= 1 and rebuilt["unreadable"] == []
    listed = json.loads(run(env, "backup", "list", "--json").stdout)
    assert [b["id"] for b in listed] == [first["id"], second["id"]]
    run(env, "restore", first["id"], "--target", str(tmp_path / "out"))
    assert_same_tree(src, tmp_path / "out")


def test_unreadable_file_is_named_and_the_backup_is_partial(cli_env: dict[str, str], tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    secret = src / "docs" / "locked.txt"
    secret.write_text("no one may read this")
    secret.chmod(0)
    run(cli_env, "init")
    run(cli_env, "source", "add", "docs", "--path", str(src))
    prefix: list[str] = []
    if os.geteuid() == 0:  # root reads anything: drop the capabilities that let it
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to test unreadable files as root"
        prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all"]
    proc = run(cli_env, "backup", "run", "-s", "docs", "-t", "full", "--json", prefix=prefix, ok=False)
    assert proc.returncode == 16, proc.stderr  # partial: not 0, which is for complete only
    result = json.loads(proc.stdout)
    assert result["state"] == "partial"
    assert [e["path"] for e in result["errors"]] == ["docs/locked.txt"]
    assert "permission denied" in result["errors"][0]["error"].lower()
    run(cli_env, "restore", result["id"], "--target", str(tmp_path / "out"))
    assert (tmp_path / "out" / "docs" / "ledger.csv").read_bytes() == (
        src / "docs" / "ledger.csv"
    ).read_bytes()
    assert not (tmp_path / "out" / "docs" / "locked.txt").exists()


def test_killed_backup_is_not_complete_and_the_rerun_resumes(cli_env: dict[str, str], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"part{i:02d}.bin").write_bytes(os.urandom(16 << 20))
    env = {**cli_env, "BACKUP_THREADS": "1"}
    run(env, "init")
    run(env, "source", "add", "big", "--path", str(src))
    packs = Path(env["EQUISPLIT_DR_HOME"]) / "repo" / "packs"
    proc = subprocess.Popen(
        [*EXE, "backup", "run", "-s", "big", "-t", "full"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(packs.rglob("*"))) < 6:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    stored_before = {p.name for p in packs.rglob("*") if p.is_file() and not p.name.startswith(".tmp")}
    assert stored_before, "the backup was killed before it stored anything"
    listed = json.loads(run(env, "backup", "list", "--json").stdout)
    assert [b["state"] for b in listed] == ["running"]  # not complete; the next run marks it
    rerun = json.loads(run(env, "backup", "run", "-s", "big", "-t", "full", "--json").stdout)
    assert rerun["state"] == "complete"
    total = 12 * (16 << 20)
    assert rerun["bytes_read"] == total
    assert rerun["bytes_new"] < total  # what the killed run stored was not uploaded again
    states = {b["id"]: b["state"] for b in json.loads(run(env, "backup", "list", "--json").stdout)}
    assert sorted(states.values()) == ["complete", "interrupted"]
    run(env, "restore", rerun["id"], "--target", str(tmp_path / "out"))
    assert_same_tree(src, tmp_path / "out")


def test_threaded_restore_of_a_damaged_pack_exits_5_naming_it(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"part{i}.bin").write_bytes(os.urandom(20 << 20))
    env = {**cli_env, "BACKUP_PROCESSES": "1", "BACKUP_THREADS": "1"}
    run(env, "init")
    run(env, "source", "add", "big", "--path", str(src))
    backup = json.loads(run(env, "backup", "run", "-s", "big", "-t", "full", "--json").stdout)
    stored = (Path(env["EQUISPLIT_DR_HOME"]) / "repo" / "packs").rglob("*")
    packs = sorted((p for p in stored if p.is_file()), key=lambda p: p.stat().st_size)[
        1:
    ]  # not the manifest's
    assert len(packs) >= 3  # more packs than threads: the others are still queued when one fails
    for pack in packs:  # every data pack damaged: whichever is read first fails
        with open(pack, "r+b") as handle:
            handle.seek(100)
            byte = handle.read(1)
            handle.seek(100)
            handle.write(bytes([byte[0] ^ 0x01]))
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        proc = run(env, "restore", backup["id"], "--target", str(out), ok=False)
        assert proc.returncode == 5, proc.stderr
        assert "Traceback" not in proc.stderr and "corrupt" in proc.stderr
        assert any(p.name in proc.stderr for p in packs)


def test_bad_target_and_bad_times_are_errors_not_tracebacks(cli_env: dict[str, str], tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=1)
    run(cli_env, "init")
    run(cli_env, "source", "add", "docs", "--path", str(src))
    run(cli_env, "backup", "run", "-s", "docs", "-t", "full")
    (tmp_path / "plain").write_text("a file")
    inside = str(tmp_path / "plain" / "out")
    for extra in ([], ["--dry-run"]):
        proc = run(cli_env, "restore", "latest", "-s", "docs", "--target", inside, *extra, ok=False)
        assert proc.returncode == 11 and "Traceback" not in proc.stderr
        assert str(tmp_path / "plain") in proc.stderr
    for args in (["backup", "status", "--since"], ["backup", "logs", "--last"]):
        proc = run(cli_env, *args, "999999999999d", ok=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "999999999999d" in proc.stderr
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("x")
    proc = run(cli_env, "restore", "latest", "-s", "docs", "--target", str(out), "--dry-run", ok=False)
    assert proc.returncode == 11 and "not empty" in proc.stderr
    proc = run(
        cli_env,
        "restore",
        "latest",
        "-s",
        "docs",
        "--target",
        str(out),
        "--overwrite",
        "--skip-existing",
        ok=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = run(cli_env, "restore", "latest", "-s", "docs", "--target", str(out), "--skip-existing")
    assert (out / "docs" / "ledger.csv").read_bytes() == (src / "docs" / "ledger.csv").read_bytes()


def test_an_error_with_brackets_prints_as_written_not_as_markup(cli_env: dict[str, str]) -> None:
    """A malformed S3 URL's hint names the accepted forms, `s3://bucket[/prefix][?...]`: printed as
    written, never read as console markup (it ended in a MarkupError traceback)."""
    proc = run({**cli_env, "BACKUP_STORAGE_URL": "s3://eq/?region=us-east-1"}, "init", ok=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "'eq' is not a valid bucket name" in proc.stderr
    assert "s3://bucket[/prefix][?endpoint_url=URL" in proc.stderr
