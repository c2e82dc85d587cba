"""How many threads a restore from S3 writes on: a few, not BACKUP_THREADS' default of two a core. Each
thread waits for its pack's GET, but four threads writing small files in one process handed the GIL over
around every system call of every file (docs/S3.md section 2)."""

from __future__ import annotations

import pytest

from app.context import Context
from app.restore.plan import REMOTE_THREADS, threads_per_process
from tests.support.s3counter import CountedBucket, counted_bucket, counted_s3  # noqa: F401
from tests.support.system import Factory

pytestmark = [pytest.mark.s3]


def test_a_restore_from_s3_writes_on_two_threads_unless_backup_threads_is_set(
    make_system: Factory,
    counted_bucket: CountedBucket,  # noqa: F811
) -> None:
    chosen = make_system(storage=counted_bucket.url).context  # the tests' settings: BACKUP_THREADS=4
    assert chosen.storage.capabilities.remote and chosen.settings.backup_threads == 4
    assert threads_per_process(chosen, chosen.settings.worker_threads, 1) == 4  # the user's setting stands
    assert threads_per_process(chosen, chosen.settings.worker_threads, 2) == 2
    auto = Context(chosen.settings.model_copy(update={"backup_threads": 0}))  # not set
    try:
        assert threads_per_process(auto, 8, 1) == REMOTE_THREADS == 2
        assert threads_per_process(auto, auto.settings.worker_threads, 1) == 2
        assert threads_per_process(auto, 2, 2) == 1
    finally:
        auto.close()
