"""`celery -A workers flower` works with our app: a headless chromium loads Flower's tasks page while a
backup runs and sees our task names; Flower's API shows arguments that are ids and names, never keys.

"While a backup runs" is made certain, not left to timing: the pool child reading a unit is paused
(SIGSTOP) while the browser loads the page, and continued after."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.catalog.models import BackupUnit
from app.system import BackupSystem
from tests.support.cluster import Cluster, unit_process
from tests.support.flower import Chromium, Flower, chromium, flower  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

RUN, UNIT, FINALIZE = "tasks.backup.run_backup", "tasks.backup.backup_unit", "tasks.backup.finalize_backup"
UNITS = 3
UNIT_ENV = {"BACKUP_UNIT_BYTES": str(2 << 20)}
MAX_ARG_CHARS = 200

Tasks = dict[str, dict[str, Any]]


def _tree(root: Path) -> Path:
    root.mkdir()
    for i in range(UNITS):
        (root / f"f{i:03d}.dat").write_bytes(os.urandom(2 << 20))
    return root


def _table_rows(dom: str) -> str:
    """The rows of Flower's tasks table as its datatable script rendered them (empty if it never ran)."""
    match = re.search(r'<table[^>]*id="tasks-table".*?<tbody[^>]*>(.*?)</tbody>', dom, re.S)
    return match.group(1) if match else ""


def _wait_tasks(
    server: Flower, done: Callable[[Iterable[dict[str, Any]]], bool], timeout: float = 30
) -> Tasks:
    deadline = time.monotonic() + timeout
    while True:
        tasks: Tasks = server.api("/api/tasks")
        if done(tasks.values()):
            return tasks
        if time.monotonic() > deadline:
            states = sorted((str(t.get("name")), str(t.get("state"))) for t in tasks.values())
            raise AssertionError(
                f"flower did not get there in {timeout} s; it shows {states}\n{server.logs()}"
            )
        time.sleep(0.1)


def _has(name: str, state: str) -> Callable[[Iterable[dict[str, Any]]], bool]:
    return lambda tasks: any(t.get("name") == name and t.get("state") == state for t in tasks)


def _running_unit_pid(deadline: float) -> int:
    with BackupSystem() as system:
        while time.monotonic() < deadline:
            with system.context.sessions() as session:
                unit = session.scalars(select(BackupUnit).where(BackupUnit.state == "running")).first()
            if unit is not None and unit.worker:
                return unit_process(unit.worker, unit.backup_id, unit.number)  # the pool child
            time.sleep(0.02)
    raise AssertionError("no unit was seen running")


def _load_page(browser: Chromium, server: Flower, names: tuple[str, ...], shot: Path) -> str:
    dom = browser.dump_dom(f"{server.url}/tasks", budget_ms=5000)
    rows = _table_rows(dom)
    missing = [name for name in names if name not in rows]
    if missing:
        browser.screenshot(f"{server.url}/tasks", shot)
        raise AssertionError(f"{missing} not on Flower's tasks page (screenshot {shot}):\n{dom[-3000:]}")
    return dom


def test_flower_tasks_page_shows_our_tasks_and_no_secrets(
    chromium: Chromium,  # noqa: F811  (the fixture)
    cluster: Cluster,
    flower: Flower,  # noqa: F811  (the fixture)
    tmp_path: Path,
) -> None:
    from tasks.backup import run_backup

    src = _tree(tmp_path / "src")
    cluster.start_worker("w1", extra_env=UNIT_ENV)
    flower.wait_for_worker("w1@")
    with BackupSystem() as system:
        system.add_source("docs", src)
    os.environ.update(UNIT_ENV)
    try:
        pending = run_backup.delay("docs", "full")
        child = _running_unit_pid(time.monotonic() + 30)
        os.kill(child, signal.SIGSTOP)
        try:
            seen = _wait_tasks(flower, _has(UNIT, "STARTED"))
            running_dom = _load_page(chromium, flower, (RUN, UNIT), cluster.logdir / "flower-running.png")
            assert not pending.ready(), "the backup ended while its unit was paused"
        finally:
            os.kill(child, signal.SIGCONT)
        outcome = pending.get(timeout=60)
    finally:
        for key in UNIT_ENV:
            os.environ.pop(key, None)
    assert outcome["state"] == "complete", cluster.logs()
    with BackupSystem() as system:  # each unit names its worker as Flower shows it
        ran_on = {u["worker"] for u in system.show_backup(outcome["backup_id"])["units"]}
    assert ran_on and ran_on <= set(flower.api("/api/workers?status=true")), ran_on
    tasks = _wait_tasks(flower, _has(FINALIZE, "SUCCESS"))
    # run_backup replaces itself with the chord (Task.replace): the chord's body, finalize_backup, takes
    # over run_backup's task id, so after it Flower lists that id under finalize_backup's name.
    assert tasks[pending.id]["name"] == FINALIZE
    done_dom = _load_page(chromium, flower, (UNIT, FINALIZE), cluster.logdir / "flower-done.png")
    api_text = flower.get("/api/tasks").decode()
    (first,) = [t for t in seen.values() if t["name"] == RUN]
    assert first["uuid"] == pending.id and first["args"] == "('docs', 'full')", first

    # Arguments are ids and names: readable, short, never bytes or key material.
    units = [t for t in tasks.values() if t["name"] == UNIT]
    assert sorted(t["args"] for t in units) == [f"('{outcome['backup_id']}', {n})" for n in range(UNITS)], (
        units
    )
    assert tasks[pending.id]["args"] in (f"('{outcome['backup_id']}',)", f"['{outcome['backup_id']}']"), (
        tasks[pending.id]
    )
    for task in [*seen.values(), *tasks.values()]:
        for field in ("args", "kwargs"):
            value = str(task.get(field) or "")
            assert len(value) <= MAX_ARG_CHARS, f"{task['name']} {field} is {len(value)} chars: {value[:300]}"
            # a bytes literal starts a token (`b'...'`); an id ending in "b" before its quote is not one
            assert not re.search(r"(?<!\w)b['\"]", value), (
                f"{task['name']} has bytes in its {field}: {value[:300]}"
            )
    key = cluster.env["BACKUP_ENCRYPTION_KEY"]
    for where, text in (
        ("Flower's API", api_text),
        ("the page while running", running_dom),
        ("the page after", done_dom),
        ("Flower's log", flower.logs()),
    ):
        assert key not in text and key.upper() not in text, f"the master key shows in {where}"
