"""`catalog rebuild` from storage alone, on SQLite and PostgreSQL: no `init` first, every backup's figures
exactly as they were, and each backup's job back in the ledger."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from alembic import command

from app.catalog.db import alembic_config
from app.scheduler import BackupScheduler
from app.system import BackupSystem
from tests.support.system import Factory
from tests.support.trees import assert_same_tree, make_tree

JOB_FIELDS = ("job_id", "kind", "state", "source", "backup_id", "worker")


def _catalog(request: pytest.FixtureRequest, backend: str) -> str | None:
    return request.getfixturevalue("fresh_pg_url") if backend == "postgres" else None


def _shown(system: BackupSystem) -> list[dict[str, Any]]:
    """`backup show` of every backup, without its units (per-unit records are not in storage)."""
    return [
        {k: v for k, v in system.show_backup(b["id"]).items() if k != "units"} for b in system.list_backups()
    ]


def _jobs(system: BackupSystem) -> list[dict[str, Any]]:
    from datetime import UTC, datetime

    with BackupScheduler(system.settings) as scheduler:
        rows = scheduler.job_status(datetime(2000, 1, 1, tzinfo=UTC), kind="backup")
    return [{k: r[k] for k in JOB_FIELDS} for r in rows]


def _wipe(system: BackupSystem, home: Path, backend: str) -> None:
    """Lose the catalog: the SQLite file, or every table of the PostgreSQL database."""
    if backend == "postgres":
        command.downgrade(alembic_config(system.context.engine), "base")
        system.close()
        return
    system.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{home / 'catalog.sqlite3'}{suffix}").unlink(missing_ok=True)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_rebuild_needs_no_init_and_brings_back_figures_and_jobs(
    make_system: Factory, request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    key, home, catalog = secrets.token_hex(32), tmp_path / "home", _catalog(request, backend)
    system = make_system(key=key, home=home, catalog=catalog)
    src = make_tree(tmp_path / "src", big_mib=1, small=20)
    system.add_source("docs", src, queue="chunks.nas1")
    system.create_full_backup("docs")
    (src / "late.txt").write_text("after the full backup")
    system.create_incremental_backup("docs")
    system.create_differential_backup("docs")
    listed, shown, jobs = system.list_backups(), _shown(system), _jobs(system)
    assert len(listed) == 3 and len(jobs) == 3 and all(b["bytes_stored"] > 0 for b in listed)

    report = system.rebuild_catalog()  # over the intact catalog: nothing changes
    assert system.list_backups() == listed and _shown(system) == shown and _jobs(system) == jobs
    assert report.backups == 3 and report.jobs_created == 0 and report.damaged_catalog is None

    _wipe(system, home, backend)
    rebuilt = make_system(key=key, home=home, catalog=catalog, init=False)
    report = rebuilt.rebuild_catalog()
    assert rebuilt.list_backups() == listed
    assert _shown(rebuilt) == shown
    assert _jobs(rebuilt) == jobs
    assert report.backups == 3 and report.jobs_created == 3 and report.unreadable == []
    with rebuilt.context.sessions() as session:
        from sqlalchemy import select

        from app.catalog.models import Job, Source

        progress = session.scalars(select(Job.progress).order_by(Job.created_at)).all()
        options = session.scalars(select(Source.options)).all()
    assert all(p["actor"] == "test" and p["rebuilt"] for p in progress)
    assert options == [{"queue": "chunks.nas1"}]  # the source's settings, from the manifests
    rebuilt.restore(listed[0]["id"], tmp_path / "out", paths=["docs"])
    assert_same_tree(src / "docs", tmp_path / "out" / "docs")
    again = rebuilt.create_incremental_backup("docs")  # the rebuilt catalog takes new backups
    assert again.parent_id == listed[-1]["id"] and again.state == "complete"


def test_a_manifest_without_job_still_gets_a_job(make_system: Factory, tmp_path: Path) -> None:
    """Manifests written before they carried `job` (id and actor) get a job of their own."""
    from app.repo.format import Kind, ObjectType

    key, home = secrets.token_hex(32), tmp_path / "home"
    system = make_system(key=key, home=home)
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=1, small=3))
    full = system.create_full_backup("docs")
    repo = system.context.repository
    root = repo.read_json(Kind.MANIFESTS, full.id, ObjectType.MANIFEST)
    root["backup"].pop("job", None)
    size = repo.write_json(Kind.MANIFESTS, full.id, ObjectType.MANIFEST, root)
    _wipe(system, home, "sqlite")
    rebuilt = make_system(key=key, home=home, init=False)
    report = rebuilt.rebuild_catalog()
    (job,) = _jobs(rebuilt)
    assert job["job_id"] == f"j-rebuilt-{full.id}" and job["state"] == "succeeded"
    (row,) = rebuilt.list_backups()
    assert row["bytes_stored"] == root["backup"]["stats"]["bytes_stored"] + size
    assert report.jobs_created == 1
