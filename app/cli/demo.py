"""`equisplit-dr demo`: the whole file-tree flow on embedded defaults, no servers needed."""

from __future__ import annotations

import filecmp
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from app.backup.plan import GRANULARITY_NS
from app.cli.render import backups_table, console, human
from app.cli.sample_tree import make_sample_tree, mutate_sample_tree
from app.settings import Settings, load_settings
from app.system import BackupSystem


def trees_equal(a: Path, b: Path) -> list[str]:
    """Paths that differ between two trees (content, type, mode or symlink target); empty if equal."""
    diffs: list[str] = []
    for dirpath, dirnames, filenames in os.walk(a):
        rel = os.path.relpath(dirpath, a)
        other = b / rel
        for name in dirnames + filenames:
            pa, pb = Path(dirpath) / name, other / name
            if pa.is_symlink():
                if not pb.is_symlink() or os.readlink(pa) != os.readlink(pb):
                    diffs.append(str(Path(rel) / name))
            elif pa.is_file():
                if (
                    not pb.is_file()
                    or not filecmp.cmp(pa, pb, shallow=False)
                    or pa.stat().st_mode != pb.stat().st_mode
                    or pa.stat().st_mtime_ns != pb.stat().st_mtime_ns
                ):
                    diffs.append(str(Path(rel) / name))
            elif pa.is_dir() and not pb.is_dir():
                diffs.append(str(Path(rel) / name))
        if other.is_dir():
            extra = set(os.listdir(other)) - set(dirnames + filenames)
            diffs.extend(str(Path(rel) / x) for x in extra)
    return diffs


#: Runs one backup and returns its id: in this process by default; workers/demo.py passes one that
#: goes through the Celery tasks (plan, unit chord, finalize) in eager mode.
BackupRunner = Callable[[BackupSystem, str, str], str]


def _in_process(system: BackupSystem, source: str, backup_type: str) -> str:
    return system.create_backup(source, backup_type).id


def demo_settings(home: Path) -> Settings:
    """Embedded defaults under `home`, whatever the environment says about servers."""
    return load_settings(
        equisplit_dr_home=home,
        database_url=None,
        backup_storage_url=None,
        backup_encryption_key=None,
        backup_encryption_key_file=None,
    )


def run_demo(home: Path, run: BackupRunner = _in_process, *, flow: str = "in this process") -> bool:
    home = home.resolve()
    if home.exists():
        shutil.rmtree(home)
    source_dir, restore_dir = home / "sample", home / "restored"
    size = make_sample_tree(source_dir)
    console.print(f"[bold]1.[/] generated a sample tree of {human(size)} in {source_dir}")
    # Files changed within the timestamp granularity of a backup's start are re-read by the next one
    # (docs/BACKUP.md); a real tree is older than that, so let the sample age past it.
    time.sleep(GRANULARITY_NS / 1e9 + 0.1)
    with BackupSystem(demo_settings(home), actor="demo") as system:
        report = system.init()
        console.print(
            f"[bold]2.[/] created repository {report.repository_id} (SQLite catalog, local storage, "
            f"master key in {report.generated_key_file}); backups run {flow}"
        )
        system.add_source("sample", source_dir)
        t0 = time.perf_counter()
        full = system.show_backup(run(system, "sample", "full"), audited=False)
        t1 = time.perf_counter()
        console.print(
            f"[bold]3.[/] full backup {full['id']}: {human(full['bytes_read'])} read in {t1 - t0:.2f}s "
            f"({full['bytes_read'] / (t1 - t0) / 1e6:.0f} MB/s) in {len(full['units'])} unit(s), stored "
            f"{human(full['bytes_stored'])}"
        )
        again = system.show_backup(run(system, "sample", "incremental"), audited=False)
        console.print(
            f"[bold]4.[/] unchanged incremental {again['id']}: read {human(again['bytes_read'])}, "
            f"stored {human(again['bytes_stored'])}"
        )
        mutate_sample_tree(source_dir)
        inc = system.show_backup(run(system, "sample", "incremental"), audited=False)
        console.print(
            f"[bold]5.[/] after a small change, incremental {inc['id']}: {inc['files_read']} files "
            f"re-read, {human(inc['bytes_new'])} new, stored {human(inc['bytes_stored'])}"
        )
        console.print(backups_table(system.list_backups("sample")))
        plan = system.restore(inc["id"], restore_dir)
        console.print(f"[bold]6.[/] restored {plan.files} files ({human(plan.bytes)}) into {restore_dir}")
    diffs = trees_equal(source_dir, restore_dir)
    if diffs:
        console.print(f"[bold red]restore differs from the source in {len(diffs)} paths:[/] {diffs[:5]}")
        return False
    console.print("[bold green]7. the restored tree equals the source (content, modes, mtimes, symlinks)[/]")
    return True
