"""What a backup and a restore ask of S3, counted by a loopback endpoint in front of moto's S3 server
(tests/support/s3counter.py): requests that storage can be spared are not made (issue #14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.s3counter import CountedBucket, counted_bucket, counted_s3, tally  # noqa: F401
from tests.support.system import Factory
from tests.support.trees import assert_same_tree, make_tree

pytestmark = [pytest.mark.s3]


def test_worker_processes_read_neither_keyring_nor_config(
    make_system: Factory,
    counted_bucket: CountedBucket,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A backup and a restore on worker processes read the keyring and the config at most once, in the
    process that runs the job: each worker opens the repository from what that process read
    (app/context.py: Handoff)."""
    system = make_system(storage=counted_bucket.url, backup_processes=2, backup_processes_min_bytes=0)
    src = make_tree(tmp_path / "src", big_mib=2, small=10)
    system.add_source("docs", src)
    counted_bucket.taken()
    backup = system.create_full_backup("docs")
    asked = tally(counted_bucket.taken())
    assert asked["GET keys"] <= 1 and asked["GET config"] <= 1, asked
    system.close()
    restoring = make_system(init=False, home=system.settings.home, storage=counted_bucket.url,
                            key=system.settings.backup_encryption_key.get_secret_value(),  # type: ignore[union-attr]
                            backup_processes=2, backup_processes_min_bytes=0)  # fmt: skip
    counted_bucket.taken()
    plan = restoring.restore(backup.id, tmp_path / "restored")
    asked = tally(counted_bucket.taken())
    assert plan.processes == 2
    assert_same_tree(src, tmp_path / "restored")
    assert asked["GET keys"] == 1 and asked["GET config"] == 1, asked
