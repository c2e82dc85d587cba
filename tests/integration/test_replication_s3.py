"""Replication between two S3 endpoints (moto's server over HTTP) with a PostgreSQL catalog: a region
that is down for a while makes passes fail and the lag grow, reported in status and health; once it is
back one pass catches up, copying only what is new (nothing missing, nothing twice); then the primary
bucket is emptied and a restore from the region is byte-identical."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from app import clock
from app.monitoring.health import get_health_status
from app.replication.run import replicate
from app.replication.status import replication_status
from app.system import BackupSystem
from tests.support.s3server import TEST_REGION, RestartableS3Server, s3_client, second_s3_endpoint  # noqa: F401
from tests.support.system import Factory
from tests.support.trees import assert_same_tree, make_tree

pytestmark = [pytest.mark.s3, pytest.mark.postgres, pytest.mark.slow]
REGION = "eu-central-1"
COPIED_KINDS = ("keys", "config", "packs", "manifests", "wal")


def listing(client: Any, bucket: str, prefix: str) -> dict[str, tuple[str, Any]]:
    """(ETag, LastModified) of every replicated object under the prefix, by key below it."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            key = item["Key"][len(prefix) + 1 :]
            if key.split("/")[0] in COPIED_KINDS:
                found[key] = (item["ETag"], item["LastModified"])
    return found


@pytest.fixture
def region_bucket(second_s3_endpoint: RestartableS3Server) -> Iterator[str]:  # noqa: F811
    bucket = f"region-{uuid.uuid4().hex[:16]}"
    client = s3_client(second_s3_endpoint.endpoint)
    client.create_bucket(Bucket=bucket)
    yield bucket
    if second_s3_endpoint.server is None:  # the test failed while the region was down
        second_s3_endpoint.start()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    client.delete_bucket(Bucket=bucket)


def test_a_region_down_for_a_while_catches_up_with_nothing_missing_or_twice_and_serves_a_restore(
    make_system: Factory,
    fresh_pg_url: str,
    s3_bucket_url: str,
    s3_endpoint: str,
    second_s3_endpoint: RestartableS3Server,  # noqa: F811
    region_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    region_url = f"s3://{region_bucket}/dr?endpoint_url={second_s3_endpoint.endpoint}&region={TEST_REGION}&max_attempts=2"
    system = make_system(
        catalog=fresh_pg_url,
        storage=s3_bucket_url,
        secondary_regions=[REGION],
        backup_secondary_storage_urls={REGION: region_url},
    )
    src = make_tree(tmp_path / "src", big_mib=2, small=10)
    system.add_source("docs", src)
    system.create_full_backup("docs")
    [first] = replicate(system.context)
    assert first.error is None and first.copied >= 2
    region_client = s3_client(second_s3_endpoint.endpoint)
    before = listing(region_client, region_bucket, "dr")
    assert {k.split("/")[0] for k in before} == {"keys", "config", "packs", "manifests"}

    # The region goes down; backups go on.
    second_s3_endpoint.stop()
    (src / "docs" / "while-down.txt").write_text("written while the region was down\n" * 5000)
    second = system.create_incremental_backup("docs")
    down_passes = [replicate(system.context)[0] for _ in range(2)]
    for down in down_passes:
        assert down.error and down.copied == 0  # each pass tried, failed, and said so
    [status] = replication_status(system.context)
    assert status.last_error == down_passes[-1].error and status.oldest_waiting is not None
    assert status.oldest_waiting > clock.as_utc(first_backup_finished(system))  # only the new objects wait
    real_now = clock.now
    monkeypatch.setattr(clock, "now", lambda: status.oldest_waiting + timedelta(hours=5))
    [late] = replication_status(system.context)
    assert late.lag_seconds == 5 * 3600 and late.lag_exceeded
    [issue] = [i for i in get_health_status(system.context).issues if REGION in i.message]
    assert issue.severity == "warning" and "lags 18000 s" in issue.message and "last error" in issue.message
    monkeypatch.setattr(clock, "now", real_now)

    # Back up: one pass catches up, copying only what is new.
    second_s3_endpoint.start()
    [caught_up] = replicate(system.context)
    assert caught_up.error is None and caught_up.failed == 0 and caught_up.manifests_held == 0
    after = listing(region_client, region_bucket, "dr")
    primary_bucket, _, rest = s3_bucket_url[len("s3://") :].partition("/")
    primary_prefix = rest.split("?")[0]
    primary = listing(s3_client(s3_endpoint), primary_bucket, primary_prefix)
    assert set(after) == set(primary)  # nothing missing, nothing extra
    assert all(after[k] == before[k] for k in before)  # nothing copied twice: same ETag and time
    new = set(after) - set(before)
    assert f"manifests/{second.id}" in new
    assert caught_up.copied == len(new)
    assert all(after[k][0] == primary[k][0] for k in after)  # byte for byte (MD5 ETags of single PUTs)
    [status] = replication_status(system.context)
    assert status.lag_seconds == 0 and status.objects["pending"] == status.objects["failed"] == 0

    # The primary is deleted: the restore reads the region alone.
    s3 = s3_client(s3_endpoint)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=primary_bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=primary_bucket, Delete={"Objects": keys})
    from_region = BackupSystem(system.settings, region=REGION)
    try:
        from_region.restore(second.id, tmp_path / "restored")
    finally:
        from_region.close()
    assert_same_tree(src, tmp_path / "restored")


def first_backup_finished(system: BackupSystem) -> Any:
    from sqlalchemy import select

    from app.catalog.models import Backup

    with system.context.sessions() as session:
        return session.scalars(select(Backup.finished_at).order_by(Backup.finished_at)).first()
