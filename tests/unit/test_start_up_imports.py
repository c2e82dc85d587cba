"""Every CLI command pays for what its process imports before it starts: a backup or a restore loads
the code it runs, not the rest of the system (app/system.py imports each command's code when it runs)."""

from __future__ import annotations

import subprocess
import sys


def _imported(statement: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement], capture_output=True, text=True, check=True
    )
    return {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}


def test_a_backup_imports_neither_restore_retention_rebuild_drills_nor_another_dialect() -> None:
    imported = _imported("import app.cli.main, app.system, app.backup.engine")
    assert "app.backup.unit" in imported  # the statement did import the backup's code
    unneeded = {
        "app.restore.engine",
        "app.retention.apply",
        "app.retention.plan",
        "app.catalog.rebuild",
        "app.logical.restore",
        "app.audit.anchors",
        "app.audit.recovery",
        "sqlalchemy.dialects.postgresql",  # a SQLite catalog's backup needs only SQLite's dialect
    }
    assert not imported & unneeded


def test_a_restore_does_not_import_the_backup_engine() -> None:
    imported = _imported("import app.cli.main, app.system, app.restore.engine")
    assert "app.restore.engine" in imported
    assert not imported & {"app.backup.engine", "app.backup.prepare", "app.retention.apply"}


def test_a_restore_worker_imports_no_catalog_and_no_settings() -> None:
    # what a restore's fork server preloads (app/forkserver.py: RESTORE_PRELOAD): ~0.15 CPU-s, not ~0.7
    imported = _imported("import app.forkserver_process, app.restore.worker")
    assert "app.restore.files" in imported
    assert not {m for m in imported if m.split(".")[0] in ("sqlalchemy", "pydantic", "pydantic_settings")}
    assert not {m for m in imported if m.startswith(("app.catalog", "app.settings", "app.context"))}


def test_the_cli_imports_rich_only_to_print_with_it() -> None:
    # a command printing JSON alone (`backup run --json`, as scripts and the benchmarks run it) skips
    # rich's import (~0.02 CPU-s); a console is made on its first use (app/cli/render.py: _LazyConsole)
    imported = _imported("import app.cli.main, app.system, app.backup.engine")
    assert "app.cli.render" in imported
    assert not {m for m in imported if m.split(".")[0] == "rich"}
    printed = _imported("from app.cli.render import console; console.print('x')")
    assert "rich.console" in printed
