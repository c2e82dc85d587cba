"""Backups killed (SIGKILL) at chosen points, then reconciled by the maintenance command or by the
next backup of the source: a backup whose manifest is whole becomes restorable, one without is
interrupted, and their leftover objects go once past the grace period (docs/BACKUP.md)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.backup import manifests
from app.backup.plan import GRANULARITY_NS
from app.backup.prepare import prepare_backup
from app.backup.reconcile import reconcile
from app.catalog.models import AuditEntry, Backup
from app.errors import BackupFailedError
from app.repo.format import Kind
from app.system import BackupSystem
from tests.support.trees import assert_same_tree, make_tree

EXE = [sys.executable, "-m", "app.cli.main"]

#: Runs a full backup of source `docs` and SIGKILLs itself at the point named by argv[1]: right after
#: the manifest root is durable (before the catalog says complete), or while the second pack is being
#: written (units in flight: their objects and the pack's temporary file stay behind).
VICTIM = """
import os, signal, sys
from app.system import BackupSystem
point = sys.argv[1]
if point == "after-manifest":
    from app.backup import manifests
    write_root = manifests.write_root
    def write_root_then_die(*args, **kwargs):
        write_root(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    manifests.write_root = write_root_then_die
else:
    replace, packs = os.replace, []
    def replace_or_die(src, dst, **kwargs):
        if "/packs/" in str(dst):
            packs.append(dst)
            if len(packs) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        return replace(src, dst, **kwargs)
    os.replace = replace_or_die
with BackupSystem() as system:
    system.create_full_backup("docs")
raise SystemExit("not killed")
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "DATABASE_URL", "EQUISPLIT"))}
    base.update(
        EQUISPLIT_DR_HOME=str(tmp_path / "home"),
        BACKUP_ENCRYPTION_KEY=secrets.token_hex(32),
        BACKUP_PROCESSES="1",
        BACKUP_THREADS="2",
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    return base


def cli(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([*EXE, *args], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def kill_backup_at(env: dict[str, str], point: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", VICTIM, point], env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == -9, f"not killed at {point}: {proc.returncode}\n{proc.stderr}"
    listed = json.loads(cli(env, "backup", "list", "--json"))
    running = [b for b in listed if b["state"] == "running"]
    assert len(running) == 1, listed
    return str(running[0]["id"])


def unit_objects(home: Path, backup_id: str) -> list[str]:
    return sorted(p.name for p in (home / "repo" / "units").glob(f"{backup_id}.*"))


def temporaries(home: Path) -> list[Path]:
    return [p for p in (home / "repo").rglob(".tmp-*") if p.is_file()]


def audit_of(env: dict[str, str]) -> list[AuditEntry]:
    with BackupSystem() as system, system.context.sessions() as session:
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def test_killed_after_its_manifest_the_backup_is_reconciled_complete_and_restores(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Path(env["EQUISPLIT_DR_HOME"])
    src = make_tree(tmp_path / "src", big_mib=2, small=5)
    cli(env, "init")
    cli(env, "source", "add", "docs", "--path", str(src))
    killed = kill_backup_at(env, "after-manifest")
    assert (home / "repo" / "manifests" / killed).is_file()
    left = unit_objects(home, killed)
    assert left  # its units' objects: finalize deletes them only after the catalog says complete

    dry = json.loads(
        cli({**env, "BACKUP_RECONCILE_GRACE_SECONDS": "0"}, "maintenance", "reconcile", "--dry-run", "--json")
    )
    assert dry["completed"] == {killed: "complete"}
    assert json.loads(cli(env, "backup", "list", "--json"))[0]["state"] == "running"  # dry run: no change

    report = json.loads(
        cli({**env, "BACKUP_RECONCILE_GRACE_SECONDS": "0"}, "maintenance", "reconcile", "--json")
    )
    assert report["completed"] == {killed: "complete"} and report["interrupted"] == {}
    assert sorted(report["deleted_units"]) == left and unit_objects(home, killed) == []
    shown = json.loads(cli(env, "backup", "show", killed, "--json"))
    assert shown["state"] == "complete" and shown["files"] == 9
    cli(env, "restore", killed, "--target", str(tmp_path / "out"))
    assert_same_tree(src, tmp_path / "out")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reconciled = [a for a in audit_of(env) if a.action == "backup.reconciled"]
    assert [a.object for a in reconciled] == [killed]
    # Looked at once: a second pass finds nothing to do.
    again = json.loads(cli(env, "maintenance", "reconcile", "--json"))
    assert again["completed"] == {} and again["interrupted"] == {}


def test_the_next_backup_of_the_source_reconciles_one_killed_after_its_manifest(
    env: dict[str, str], tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "src", big_mib=2, small=5)
    time.sleep(GRANULARITY_NS / 1e9 + 0.1)  # ctime cannot be set back: files older than the window
    cli(env, "init")
    cli(env, "source", "add", "docs", "--path", str(src))
    killed = kill_backup_at(env, "after-manifest")
    after = json.loads(cli(env, "backup", "run", "-s", "docs", "-t", "incremental", "--json"))
    assert after["state"] == "complete"
    assert after["parent"] == killed  # the reconciled backup is a parent like any complete one
    assert after["files_read"] == 0
    states = {b["id"]: b["state"] for b in json.loads(cli(env, "backup", "list", "--json"))}
    assert states == {killed: "complete", after["id"]: "complete"}
    cli(env, "restore", killed, "--target", str(tmp_path / "out"))
    assert_same_tree(src, tmp_path / "out")


def test_killed_mid_units_the_backup_is_interrupted_and_its_leftovers_go_after_the_grace_period(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Path(env["EQUISPLIT_DR_HOME"])
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"part{i}.bin").write_bytes(os.urandom(8 << 20))
    env["BACKUP_UNIT_BYTES"] = str(8 << 20)
    cli(env, "init")
    cli(env, "source", "add", "docs", "--path", str(src))
    killed = kill_backup_at(env, "mid-units")
    assert temporaries(home), "the killed pack write left no temporary file"
    left = unit_objects(home, killed)
    assert left  # .in objects of its units (the plan of a one-process backup stays in memory)

    # Within the grace period: settled (its process is gone), but nothing deleted yet.
    report = json.loads(cli(env, "maintenance", "reconcile", "--json"))
    assert report["interrupted"].keys() == {killed} and "no manifest" in report["interrupted"][killed]
    assert report["deleted_units"] == [] and report["deleted_temporaries"] == []
    assert unit_objects(home, killed) == left and temporaries(home)

    report = json.loads(
        cli({**env, "BACKUP_RECONCILE_GRACE_SECONDS": "0"}, "maintenance", "reconcile", "--json")
    )
    assert report["interrupted"] == {}  # looked at once
    assert sorted(report["deleted_units"]) == left
    assert len(report["deleted_temporaries"]) == 1
    assert unit_objects(home, killed) == [] and temporaries(home) == []
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    trail = audit_of(env)
    assert [a.object for a in trail if a.action == "backup.interrupted"] == [killed]
    deleted = [a for a in trail if a.action == "object.deleted"]
    assert len(deleted) == len(left) + 1 and all(a.detail["reason"] for a in deleted)
    states = {b["id"]: b["state"] for b in json.loads(cli(env, "backup", "list", "--json"))}
    assert states == {killed: "interrupted"}

    rerun = json.loads(cli(env, "backup", "run", "-s", "docs", "-t", "full", "--json"))
    assert rerun["state"] == "complete"
    cli(env, "restore", rerun["id"], "--target", str(tmp_path / "out"))
    assert_same_tree(src, tmp_path / "out")


def test_the_leftovers_of_a_running_backup_are_never_touched(system: BackupSystem, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    system.add_source("docs", src)
    ctx = system.context
    ctx.settings.backup_reconcile_grace_seconds = 0
    prepared = prepare_backup(ctx, "docs", "full", cluster=True)  # its units wait for workers
    left = sorted(i.name for i in ctx.storage.list(Kind.UNITS))
    assert left
    report = reconcile(ctx)
    assert report.completed == {} and report.interrupted == {} and report.deleted_units == []
    assert sorted(i.name for i in ctx.storage.list(Kind.UNITS)) == left
    with ctx.sessions() as session:
        backup = session.get(Backup, prepared.backup_id)
        assert backup is not None and backup.state == "running"


def test_a_failed_backup_whose_manifest_is_whole_is_reconciled_on_any_backend(
    system_any_backend: BackupSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reaper (or the engine) failed a backup that had written its manifest: on local storage and
    on S3, reconcile marks it complete and removes its unit objects (local storage only: on S3 a backup
    run on one machine stores none)."""
    system = system_any_backend
    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    system.add_source("docs", src)
    ctx = system.context
    ctx.settings.backup_reconcile_grace_seconds = 0
    write_root = manifests.write_root

    def write_root_then_fail(*args: Any, **kwargs: Any) -> int:
        write_root(*args, **kwargs)
        raise RuntimeError("lost between the manifest and the catalog")

    monkeypatch.setattr(manifests, "write_root", write_root_then_fail)
    with pytest.raises(BackupFailedError):
        system.create_full_backup("docs")
    monkeypatch.undo()
    (failed,) = system.list_backups("docs")
    assert failed["state"] == "failed"
    # its unit objects: stored on local storage; on S3 a one-machine backup keeps them in memory
    assert bool(list(ctx.storage.list(Kind.UNITS))) != ctx.storage.capabilities.remote

    report = reconcile(ctx)
    assert report.completed == {failed["id"]: "complete"}
    assert list(ctx.storage.list(Kind.UNITS)) == []
    assert system.list_backups("docs")[0]["state"] == "complete"
    system.restore(failed["id"], tmp_path / "out")
    assert_same_tree(src, tmp_path / "out")
