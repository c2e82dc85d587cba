"""Replication of an archive written in DEEP_ARCHIVE (docs/REPLICATION.md, "Archives in a frozen class"),
between two moto S3 endpoints: a frozen pack of the primary cannot be read, so the first pass requests its
thaw and leaves it pending ("thawing in the primary") instead of failing; once moto's restore is done the
next pass copies it. The region holds every object of the archive in the primary's class and under the
same Object Lock, and a restore from the region (after its own thaw) is byte-identical."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from app.catalog import replicas
from app.catalog.models import ReplicaObject
from app.replication.run import replicate
from app.replication.status import replication_status
from app.system import BackupSystem
from tests.support.s3server import TEST_REGION, RestartableS3Server, s3_client, second_s3_endpoint  # noqa: F401
from tests.support.system import Factory
from tests.support.trees import assert_same_tree, make_tree

pytestmark = [pytest.mark.s3]
REGION = "eu-central-1"
COPIED_KINDS = ("keys", "config", "packs", "manifests")


def locked_bucket(client: Any) -> str:
    name = f"lock-{secrets.token_hex(6)}"
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)  # locked objects outlive the test
    return name


def region_of(server: RestartableS3Server, locked: bool = False) -> tuple[Any, str, str]:
    """A new bucket on the region's endpoint: its client, its name and the region's storage URL."""
    client = s3_client(server.endpoint)
    if locked:
        bucket = locked_bucket(client)
    else:
        bucket = f"region-{secrets.token_hex(6)}"
        client.create_bucket(Bucket=bucket)
    return client, bucket, f"s3://{bucket}/dr?endpoint_url={server.endpoint}&region={TEST_REGION}"


def archive_in_primary(
    system: BackupSystem, tmp_path: Path, s3_bucket_url: str, s3_endpoint: str
) -> tuple[Any, str, str, dict[str, tuple[str, Any, Any]]]:
    """An archive backup of a small tree; the primary's client, bucket, prefix and heads after it."""
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=1, small=2))
    system.create_archive_backup("docs")
    bucket, _, rest = s3_bucket_url[len("s3://") :].partition("/")
    prefix, client = rest.split("?")[0], s3_client(s3_endpoint)
    return client, bucket, prefix, heads(client, bucket, prefix)


def heads(client: Any, bucket: str, prefix: str) -> dict[str, tuple[str, Any, Any]]:
    """(StorageClass, lock mode, retain-until) of every replicated object under the prefix, by key below it."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            key = item["Key"][len(prefix) + 1 :]
            if key.split("/")[0] in COPIED_KINDS:
                head = client.head_object(Bucket=bucket, Key=item["Key"])
                found[key] = (
                    head.get("StorageClass", "STANDARD"),
                    head.get("ObjectLockMode"),
                    head.get("ObjectLockRetainUntilDate"),
                )
    return found


def test_a_deep_archive_waits_for_the_thaw_then_reaches_the_region_in_its_class_and_lock(
    make_system: Factory,
    s3_endpoint: str,
    second_s3_endpoint: RestartableS3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    primary_client = s3_client(s3_endpoint)
    primary_bucket = locked_bucket(primary_client)
    region_client, region_bucket, region_url = region_of(second_s3_endpoint, locked=True)
    system = make_system(
        storage=f"s3://{primary_bucket}/repo?endpoint_url={s3_endpoint}&region={TEST_REGION}",
        secondary_regions=[REGION],
        backup_secondary_storage_urls={REGION: region_url},
        backup_archive_storage_class="DEEP_ARCHIVE",
        backup_archive_object_lock=True,
        backup_thaw_poll_seconds=0.05,
    )
    src = make_tree(tmp_path / "src", big_mib=1, small=2)
    system.add_source("docs", src)
    archive = system.create_archive_backup("docs")
    primary = heads(primary_client, primary_bucket, "repo")
    cold = {k for k, (cls, _, _) in primary.items() if cls == "DEEP_ARCHIVE"}
    assert cold and all(k.startswith("packs/") for k in cold)

    # First pass: nothing fails; the frozen packs are pending, thawing in the primary; the manifest waits.
    [first] = replicate(system.context)
    assert first.error is None and first.failed == 0, first
    assert first.thawing == len(cold) and first.manifests_held == 1
    with system.context.sessions() as session:
        rows = {f"{r.kind}/{r.name}": r for r in session.query(ReplicaObject).filter_by(region=REGION)}
    assert {k for k, r in rows.items() if r.state == replicas.PENDING} == cold | {f"manifests/{archive.id}"}
    assert all("thawing in the primary" in (rows[k].error or "") for k in cold)
    [status] = replication_status(system.context)
    assert status.objects["failed"] == 0 and status.objects["pending"] == len(cold) + 1
    assert status.lag_seconds >= 0 and status.oldest_waiting is not None  # real lag, counted
    assert {w["object"] for w in status.waiting} >= cold
    assert all("thawing in the primary" in w["reason"] for w in status.waiting if w["object"] in cold)

    # moto's restore is done at once: the next pass copies the packs, then the manifest.
    [second] = replicate(system.context)
    assert second.error is None and second.failed == 0 and second.thawing == 0 and second.manifests_held == 0
    region = heads(region_client, region_bucket, "dr")
    assert set(region) == set(primary)
    for key, (cls, mode, until) in primary.items():
        assert region[key][0] == cls, key  # the same storage class
        assert region[key][1:] == (mode, until), key  # the same Object Lock
    assert (
        all(primary[k][1] == "COMPLIANCE" for k in cold)
        and primary[f"manifests/{archive.id}"][1] == "COMPLIANCE"
    )
    [status] = replication_status(system.context)
    assert status.lag_seconds == 0 and status.objects["pending"] == 0 and status.waiting == []

    # A restore from the region alone: its own cold packs are thawed first, then read.
    from_region = BackupSystem(system.settings, region=REGION)
    try:
        plan = from_region.restore(archive.id, tmp_path / "restored")
    finally:
        from_region.close()
    assert plan.thaw is not None and plan.thaw["requested"] == len(cold) and plan.thaw["pending"] == []
    assert_same_tree(src, tmp_path / "restored")


def test_with_thaw_requests_off_replication_only_waits_for_someone_elses_thaw(
    make_system: Factory,
    s3_bucket_url: str,
    s3_endpoint: str,
    second_s3_endpoint: RestartableS3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    """BACKUP_THAW_REQUEST=false: the pass requests nothing (no Restore header in the primary), says why
    the packs wait, and copies them in their class once an operator has thawed them by hand."""
    region_client, region_bucket, region_url = region_of(second_s3_endpoint)
    system = make_system(
        storage=s3_bucket_url,
        secondary_regions=[REGION],
        backup_secondary_storage_urls={REGION: region_url},
        backup_archive_storage_class="DEEP_ARCHIVE",
        backup_thaw_request=False,
    )
    primary_client, primary_bucket, prefix, primary = archive_in_primary(
        system, tmp_path, s3_bucket_url, s3_endpoint
    )
    cold = {k for k, (cls, _, _) in primary.items() if cls == "DEEP_ARCHIVE"}
    assert cold

    for _ in range(2):  # waiting is not failing, and asks nothing of S3
        [waiting] = replicate(system.context)
        assert waiting.error is None and waiting.failed == 0 and waiting.thawing == len(cold)
    assert all(
        "Restore" not in primary_client.head_object(Bucket=primary_bucket, Key=f"{prefix}/{k}") for k in cold
    )
    [status] = replication_status(system.context)
    reasons = {w["object"]: w["reason"] for w in status.waiting}
    assert all("no thaw requested (BACKUP_THAW_REQUEST=false)" in reasons[k] for k in cold)

    for key in cold:  # an operator thaws them
        primary_client.restore_object(
            Bucket=primary_bucket, Key=f"{prefix}/{key}", RestoreRequest={"Days": 1}
        )
    [done] = replicate(system.context)
    assert done.error is None and done.failed == done.thawing == done.manifests_held == 0
    region = heads(region_client, region_bucket, "dr")
    assert {region[k][0] for k in cold} == {"DEEP_ARCHIVE"}


def test_a_glacier_ir_archive_is_copied_at_once_in_its_class(
    make_system: Factory,
    s3_bucket_url: str,
    s3_endpoint: str,
    second_s3_endpoint: RestartableS3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    """GLACIER_IR is readable at once: one pass copies the archive, each object in the primary's class
    (before, the region's copies were all STANDARD)."""
    region_client, region_bucket, region_url = region_of(second_s3_endpoint)
    system = make_system(
        storage=s3_bucket_url,
        secondary_regions=[REGION],
        backup_secondary_storage_urls={REGION: region_url},
        backup_archive_storage_class="GLACIER_IR",
    )
    primary = archive_in_primary(system, tmp_path, s3_bucket_url, s3_endpoint)[3]
    assert "GLACIER_IR" in {cls for cls, _, _ in primary.values()}
    [done] = replicate(system.context)
    assert done.error is None and done.failed == done.thawing == done.manifests_held == 0
    region = heads(region_client, region_bucket, "dr")
    assert {k: v[0] for k, v in region.items()} == {k: v[0] for k, v in primary.items()}
