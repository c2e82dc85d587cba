"""What a backup and a restore ask of S3, counted by a loopback endpoint in front of moto's S3 server
(tests/support/s3counter.py): requests that storage can be spared are not made (issue #14)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from app.backup.plan import GRANULARITY_NS
from app.repo.manifest import root_chunks
from tests.support.s3counter import CountedBucket, counted_bucket, counted_s3, tally  # noqa: F401
from tests.support.s3server import s3_client
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
    # the units' inputs and results went to and from the worker processes with the units, not through
    # storage (one machine); the one listing of units/ is the reconciliation's
    assert not asked["PUT units"] and not asked["GET units"] and asked["LIST units"] == 1, asked
    system.close()
    restoring = make_system(init=False, home=system.settings.home, storage=counted_bucket.url,
                            key=system.settings.backup_encryption_key.get_secret_value(),  # type: ignore[union-attr]
                            backup_processes=2, backup_processes_min_bytes=0)  # fmt: skip
    counted_bucket.taken()
    plan = restoring.restore(backup.id, tmp_path / "restored")
    asked = tally(counted_bucket.taken())
    assert plan.processes == 2
    assert_same_tree(src, tmp_path / "restored")
    assert asked["GET keys"] == 1 and asked["GET config"] <= 1, asked


def test_an_unchanged_backup_and_a_restore_read_no_metadata_the_cache_holds(
    make_system: Factory,
    counted_bucket: CountedBucket,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Each step a new process (a new system on the same home, as the CLI runs): the config and the
    manifest's entries come from the local metadata cache (app/repo/cache.py); the keyring and the
    manifest's root are still read from storage, and the data from its packs."""
    first = make_system(storage=counted_bucket.url)
    key = first.settings.backup_encryption_key.get_secret_value()  # type: ignore[union-attr]
    src = make_tree(tmp_path / "src", big_mib=2, small=200)
    time.sleep(GRANULARITY_NS / 1e9 + 0.1)  # ctime cannot be set back: let the files age past the window
    first.add_source("docs", src)
    first.create_full_backup("docs")
    first.close()

    def process() -> Any:
        return make_system(init=False, home=first.settings.home, storage=counted_bucket.url, key=key)

    counted_bucket.taken()
    unchanged = process().create_incremental_backup("docs")
    asked = tally(counted_bucket.taken())
    assert unchanged.stats["files_read"] == 0
    assert asked["GET keys"] == 1 and asked["GET manifests"] == 1 and asked["PUT manifests"] == 1, asked
    assert not asked["GET config"] and not asked["GET packs"], asked  # from the cache
    system = process()
    root, _ = system.context.repository.read_manifest_with_root(unchanged.id)
    counted_bucket.taken()
    system.restore(unchanged.id, tmp_path / "restored")
    restore_asked = counted_bucket.taken()
    assert_same_tree(src, tmp_path / "restored")
    read_packs = {r.key.split("/")[-1] for r in restore_asked if r.verb == "GET" and r.kind == "packs"}
    manifest_packs = {chunk.pack_id for chunk in root_chunks(root)}
    assert read_packs and not read_packs & manifest_packs, "a manifest chunk was read from storage"
    assert not tally(restore_asked)["GET config"]


def test_a_restore_from_s3_reads_each_pack_once_in_one_process(
    make_system: Factory,
    counted_bucket: CountedBucket,  # noqa: F811
    tmp_path: Path,
) -> None:
    """BACKUP_PROCESSES unset: on S3 a restore of any size runs in its own process, every pack it needs
    read once; shares of files on worker processes read packs several times over."""
    system = make_system(storage=counted_bucket.url, backup_processes_min_bytes=0)
    src = make_tree(tmp_path / "src", big_mib=3, small=300)
    system.add_source("docs", src)
    backup = system.create_full_backup("docs")
    counted_bucket.taken()
    plan = system.restore(backup.id, tmp_path / "restored")
    packs = [r.key for r in counted_bucket.taken() if r.verb == "GET" and r.kind == "packs"]
    assert_same_tree(src, tmp_path / "restored")
    assert plan.processes == 1
    assert packs and len(packs) == len(set(packs)), packs


def test_the_pack_check_lists_the_packs_once_and_still_finds_one_lost(
    make_system: Factory,
    counted_bucket: CountedBucket,  # noqa: F811
    tmp_path: Path,
) -> None:
    """An incremental on S3 checks the packs it references with one listing, not a HEAD each, and a
    pack deleted behind the catalog's back still makes it partial (docs/BACKUP.md)."""
    system = make_system(storage=counted_bucket.url, backup_processes=2, backup_processes_min_bytes=0)
    src = make_tree(tmp_path / "src", big_mib=3, small=300)
    time.sleep(GRANULARITY_NS / 1e9 + 0.1)  # ctime cannot be set back: let the files age past the window
    system.add_source("docs", src)
    full = system.create_full_backup("docs")
    assert full.stats["packs"] >= 3  # data packs of two processes, the manifest's
    counted_bucket.taken()
    sound = system.create_incremental_backup("docs")
    asked = tally(counted_bucket.taken())
    assert sound.state == "complete" and sound.stats["files_read"] == 0
    assert asked["LIST packs"] == 1 and not asked["HEAD packs"], asked
    assert asked["LIST units"] == 1, asked  # the reconciliation's; none of its own: it stored no unit object
    client = s3_client(counted_bucket.counted.endpoint)
    # The biggest pack holds the files' chunks: the first by name was the manifest's one time in three,
    # which the next backup stores again (its entries name no chunk of it), so it stayed complete.
    stored = client.list_objects_v2(Bucket=counted_bucket.bucket, Prefix="repo/packs/")["Contents"]
    lost = max(stored, key=lambda item: item["Size"])
    client.delete_object(Bucket=counted_bucket.bucket, Key=lost["Key"])
    partial = system.create_incremental_backup("docs")
    assert partial.state == "partial" and partial.errors, partial
