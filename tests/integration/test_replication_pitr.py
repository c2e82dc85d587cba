"""Point-in-time recovery from a secondary region with the primary gone (docs/REPLICATION.md section 7):
a PostgreSQL 15 cluster archives WAL and is backed up, replication copies the base backup and the WAL,
the source is stopped and the primary repository deleted; `dr recover --from-region` restores the base
backup and fetches every WAL file from the region, and the recovered server holds the rows up to the
target and none after it."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import clock
from tests.support.pgarchive import SOURCE, Archive, point_source_at, write_fetch_script
from tests.support.pgcluster import PgCluster, RecoveryArea, chown_to_postgres
from tests.support.ports import free_port

pytestmark = [pytest.mark.slow]
REGION = "us-west-2"


@pytest.fixture
def cluster(archive: Archive, pg_template: Path) -> Iterator[PgCluster]:
    with PgCluster.create(pg_template, archive.env, checkpoint_timeout="'300s'") as started:
        point_source_at(archive, started.port)
        yield started


def test_point_in_time_recovery_from_the_region_with_the_primary_deleted(
    archive: Archive, cluster: PgCluster, recovery_area: RecoveryArea
) -> None:
    cluster.sql("CREATE TABLE marks (id serial PRIMARY KEY, note text)")
    made = archive.cli("backup", "run", "--source", SOURCE, "--type", "full", "--json")
    assert json.loads(made.stdout)["state"] == "complete"
    cluster.sql("INSERT INTO marks (note) VALUES ('before')")
    time.sleep(1.1)
    target = clock.iso(clock.now())
    assert target is not None
    time.sleep(1.1)
    cluster.sql("INSERT INTO marks (note) VALUES ('after')")
    cluster.wait_archived(cluster.switch_wal())

    ran = json.loads(archive.cli("replication", "run", "--json").stdout)
    assert ran[0]["region"] == REGION and ran[0]["error"] is None and ran[0]["manifests_held"] == 0
    status = json.loads(archive.cli("replication", "status", "--json").stdout)[0]
    assert status["lag_seconds"] == 0 and status["objects"]["pending"] == 0
    region = archive.home / "regions" / REGION
    assert len(list((region / "wal").iterdir())) >= 2  # the base backup's WAL and what came after

    cluster.stop("fast")  # nothing archives into the primary any more
    shutil.rmtree(archive.home / "repo")  # the primary is gone
    chown_to_postgres(archive.home)  # the recovered server (as postgres) reads the region's WAL

    port = free_port()
    fetch = write_fetch_script(recovery_area.base / "fetch.sh")
    proc = archive.cli(
        "dr", "recover", "--source", SOURCE, "--timestamp", target, "--target", str(recovery_area.new_dir()),
        "--start", "--port", str(port), "--restore-command", fetch, "--from-region", REGION, "--json",
        ok=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["success"] and result["restored_timestamp"] <= target
    assert [r[0] for r in recovery_area.sql(port, "SELECT note FROM marks ORDER BY id")] == ["before"]
    fetched = (recovery_area.base / "fetch.sh.calls").read_text().split("\n")
    assert len([line for line in fetched if line.strip()]) >= 1  # WAL came through restore_command
    assert not (archive.home / "repo").exists()  # read from the region alone

    # Without --start the operator starts the server: its restore_command reads the region all the same.
    later = recovery_area.new_dir()
    archive.cli(
        "dr", "recover", "--source", SOURCE, "--timestamp", target, "--target", str(later), "--from-region", REGION,
    )  # fmt: skip
    settings = (later / "postgresql.auto.conf").read_text()
    assert (
        f"restore_command = 'BACKUP_STORAGE_URL={region.as_uri()} equisplit-dr wal fetch %f %p --source db1'"
        in (settings)
    )
