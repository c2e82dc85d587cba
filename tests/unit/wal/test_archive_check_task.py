"""`tasks.wal.archive_check` (queue `wal`) reports each PostgreSQL source's archive: ranges, gaps, RPO."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.context import Context
from app.wal.push import push
from tests.unit.wal.conftest import SOURCE, WriteSegment


@pytest.fixture
def eager(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import os

    from workers import app

    monkeypatch.setattr("workers.base._context", ctx)  # the task runs on this test's catalog
    monkeypatch.setattr("workers.base._context_pid", os.getpid())
    app.conf.task_always_eager = True
    try:
        yield
    finally:
        app.conf.task_always_eager = False


def test_the_task_names_the_gap_and_the_rpo(ctx: Context, write_segment: WriteSegment, eager: None) -> None:
    from tasks.wal import archive_check
    from workers import app

    for segno in (1, 2, 4):  # 3 never archived
        push(ctx, SOURCE, write_segment(segno), lookahead=0)
    [status] = archive_check.apply(args=(SOURCE,)).get()
    assert status["source"] == SOURCE
    [timeline] = status["timelines"]
    assert [g["segments"] for g in timeline["gaps"]] == [1]
    assert timeline["gaps"][0]["first"].endswith("03")
    assert status["rpo_seconds"] is not None and status["rpo_seconds"] >= 0
    assert app.amqp.router.route({}, "tasks.wal.archive_check")["queue"].name == "wal"
    everyone = archive_check.apply().get()  # no source: every PostgreSQL source, not the file tree
    assert [s["source"] for s in everyone] == [SOURCE]
