"""Replication through a real worker (Redis broker, PostgreSQL catalog, a region on a second moto S3
endpoint): a backup's finalize enqueues a pass on queue `replicate`; with the region down the task fails
and is retried with backoff; once the region is back a retry copies everything and the lag is 0."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest

from app.catalog.models import ReplicaObject
from app.replication.status import replication_status
from app.system import BackupSystem
from tests.support.cluster import Cluster
from tests.support.s3server import TEST_REGION, RestartableS3Server, s3_client, second_s3_endpoint  # noqa: F401
from tests.support.trees import make_tree

pytestmark = [pytest.mark.postgres, pytest.mark.s3, pytest.mark.slow]
REGION = "eu-west-3"


def wait_for(predicate: object, timeout: float, what: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert callable(predicate)
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what} within {timeout} s\n{cluster.logs()}")


def test_a_backup_enqueues_replication_which_retries_while_the_region_is_down(
    s3_endpoint: str,
    second_s3_endpoint: RestartableS3Server,  # noqa: F811
    cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tasks.backup import run_backup

    bucket = f"region-{uuid.uuid4().hex[:16]}"
    s3_client(second_s3_endpoint.endpoint).create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/dr?endpoint_url={second_s3_endpoint.endpoint}&region={TEST_REGION}&max_attempts=1"
    region_env = {"SECONDARY_REGIONS": REGION, "BACKUP_SECONDARY_STORAGE_URLS": f"{REGION}={url}"}
    for name, value in region_env.items():
        monkeypatch.setenv(name, value)
    cluster.start_worker("all", "backup,chunks,replicate", concurrency=2, extra_env=region_env)
    with BackupSystem() as system:
        system.add_source("docs", make_tree(tmp_path / "src", big_mib=2, small=5))

    second_s3_endpoint.stop()
    summary = run_backup.delay("docs", "full").get(timeout=120)
    assert summary["state"] == "complete"  # the region being down never fails a backup

    def region_error() -> str | None:
        with BackupSystem() as system:
            [status] = replication_status(system.context)
        return status.last_error

    wait_for(lambda: region_error() is not None, 60, "the pass after the backup failed and said so", cluster)
    wait_for(
        lambda: re.search(r"tasks\.replicate\.replicate\[[^\]]+\] retry: Retry in \d+s", cluster.logs()),
        60,
        "the failed task was retried with backoff",
        cluster,
    )

    second_s3_endpoint.start()

    def caught_up() -> bool:
        with BackupSystem() as system:
            [status] = replication_status(system.context)
            with system.context.sessions() as session:
                manifest = session.get(ReplicaObject, (REGION, "manifests", summary["backup_id"]))
        return status.lag_seconds == 0 and manifest is not None and manifest.state == "copied"

    wait_for(caught_up, 120, "a retry of the task brought the region up to date", cluster)
    keys = s3_client(second_s3_endpoint.endpoint).list_objects_v2(Bucket=bucket, Prefix="dr/manifests/")
    assert [item["Key"] for item in keys.get("Contents", [])] == [f"dr/manifests/{summary['backup_id']}"]
    with BackupSystem() as system:
        [status] = replication_status(system.context)
    assert status.last_error is None and status.objects["failed"] == 0
