"""Metrics (docs/MONITORING.md section 4): `monitoring metrics` and the Prometheus endpoint show the
figures of real backups, drills and a real Redis broker's queues; `monitoring thresholds` the effective
values."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from app.monitoring.metrics import collect_metrics
from app.monitoring.work_metrics import QUEUES
from app.system import BackupSystem
from tests.support.cluster import RedisServer, redis_server  # noqa: F401
from tests.support.ports import free_port
from tests.support.trees import make_tree

ROOT = Path(__file__).resolve().parents[2]


def _env(system: BackupSystem, **extra: str) -> dict[str, str]:
    s = system.settings
    assert s.backup_encryption_key is not None
    return {
        **os.environ,
        "EQUISPLIT_DR_HOME": str(s.home),
        "BACKUP_ENCRYPTION_KEY": s.backup_encryption_key.get_secret_value(),
        **extra,
    }


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli.main", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _value(samples: list[dict[str, Any]], name: str, **labels: str) -> Any:
    return next(s["value"] for s in samples if s["name"] == name and s["labels"] == labels)


def test_metrics_show_the_newest_backup_and_the_last_drill(system: BackupSystem, tmp_path: Path) -> None:
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=1, small=5))
    backup = system.create_full_backup("docs")
    row = system.get_backup_row(backup.id)
    drills = system.run_restore_drills("docs")
    assert all(d.outcome == "passed" for d in drills)

    run = _cli(_env(system), "monitoring", "metrics", "--json")
    assert run.returncode == 0, run.stderr
    samples = json.loads(run.stdout)
    assert _value(samples, "equisplit_backup_last_size_bytes", source="docs") == row.bytes_total
    assert _value(samples, "equisplit_backup_last_stored_bytes", source="docs") == row.bytes_stored
    assert 0 <= _value(samples, "equisplit_backup_last_age_seconds", source="docs") < 3600
    assert _value(samples, "equisplit_backup_compression_ratio", source="docs") > 0
    assert _value(samples, "equisplit_drill_success_ratio", source="docs") == 1.0
    assert _value(samples, "equisplit_drill_last_rto_seconds", source="docs") is not None
    assert _value(samples, "equisplit_jobs", kind="backup", state="succeeded") >= 1 or any(
        s["name"] == "equisplit_jobs" for s in samples
    )
    assert {s["name"] for s in samples} >= {
        "equisplit_verification_last_passed",
        "equisplit_storage_used_ratio",
        "equisplit_alert_incidents_open",
    }

    only = _cli(_env(system), "monitoring", "metrics", "--component", "backup", "--json")
    assert {s["component"] for s in json.loads(only.stdout)} == {"backup"}
    wrong = _cli(_env(system), "monitoring", "metrics", "--component", "nope")
    assert wrong.returncode == 2 and "unknown metrics component 'nope'" in wrong.stderr


def test_the_prometheus_endpoint_serves_the_same_figures(system: BackupSystem, tmp_path: Path) -> None:
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=0, small=5))
    backup = system.create_full_backup("docs")
    row = system.get_backup_row(backup.id)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli.main", "monitoring", "serve-metrics", "--port", str(port)],
        env=_env(system),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        text = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    text = response.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert text, "the endpoint never answered"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    size = families["equisplit_backup_last_size_bytes"]
    assert [(s.labels, s.value) for s in size.samples] == [({"source": "docs"}, float(row.bytes_total))]
    assert "equisplit_backup_last_age_seconds" in families


def test_queue_depths_are_read_from_the_redis_broker(
    make_system: Any,
    redis_server: RedisServer,  # noqa: F811 - the fixture imported above
) -> None:
    import redis

    redis_server.flush()
    system = make_system(celery_broker_url=redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    try:
        for _ in range(3):
            client.lpush("wal", b"{}")
        client.lpush("backup\x06\x163", b"{}")  # a priority-3 message of queue backup
        depths = {s.labels["queue"]: s.value for s in collect_metrics(system.context, "queues")}
    finally:
        client.delete("wal", "backup\x06\x163")
        client.close()
    assert set(depths) == set(QUEUES)
    assert depths["wal"] == 3 and depths["backup"] == 1 and depths["chunks"] == 0


def test_the_queue_names_are_the_brokers() -> None:
    import celeryconfig

    assert tuple(celeryconfig.QUEUES) == QUEUES


def test_thresholds_print_the_effective_values(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "EQUISPLIT_DR_HOME": str(tmp_path),
        "ALERT_STALE_WARNING_HOURS": "6",
        "MAX_DATA_LOSS_SECONDS": "900",
    }
    run = _cli(env, "monitoring", "thresholds", "--json")
    assert run.returncode == 0, run.stderr
    values = json.loads(run.stdout)
    assert values["stale_warning_seconds"] == 6 * 3600 and values["stale_critical_seconds"] == 12 * 3600
    assert values["max_data_loss_seconds"] == 900 and values["backup_failures_escalate"] == 3
    assert values["storage_warning_percent"] == 90 and values["storage_critical_percent"] == 95
    text = _cli(env, "monitoring", "thresholds")
    assert "ALERT_STALE_WARNING_HOURS" in text.stdout and "21600" in text.stdout
