"""Compliance reports (docs/REPORTS.md): evidence per control from a real catalog; the HTML renders in
headless chromium with its charts (inline SVG drawn by matplotlib, nothing fetched) visible."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from app import clock
from app.reports.build import build_report
from app.system import BackupSystem
from tests.support.system import Factory
from tests.support.trees import make_tree

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _history(system: BackupSystem, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big_mib=1, small=4)
    system.add_source("docs", src)
    for i in range(3):
        (src / f"round{i}.txt").write_text("x" * (1000 * (i + 1)))
        system.create_incremental_backup("docs")
        system.run_restore_drills("docs")
    system.verify_backup()


def test_json_report_has_evidence_per_control(make_system: Factory, tmp_path: Path) -> None:
    system = make_system()
    _history(system, tmp_path)
    report = build_report(system.context, "soc2", clock.now().replace(year=2000), clock.now())
    controls = {c["id"]: c["status"] for c in report["controls"]}
    assert controls["backup"] == controls["verification"] == controls["drills"] == controls["audit"] == "pass"
    assert controls["encryption"] == "pass"
    e = report["evidence"]
    assert e["backups"]["finished"] == 3 and e["backups"]["success_rate"] == 1.0
    assert e["verification"]["coverage"] == 1.0
    assert len(e["drills"]["series"]) == 3 and all(
        d["rto_seconds"] is not None for d in e["drills"]["series"]
    )
    assert e["encryption"]["algorithm"] == "AES-256-GCM" and e["encryption"]["data_keys"] >= 1
    # an empty period has no evidence, and says so rather than passing
    empty = build_report(
        system.context, "soc2", clock.now().replace(year=2000), clock.now().replace(year=2001)
    )
    assert {c["id"]: c["status"] for c in empty["controls"]}["drills"] == "no evidence"
    assert empty["overall"] != "pass"


def test_a_source_never_backed_up_or_never_archived_fails_its_control_by_name(
    make_system: Factory, tmp_path: Path
) -> None:
    system = make_system()
    _history(system, tmp_path)
    system.add_source("idle", make_tree(tmp_path / "idle", big_mib=0, small=2))
    system.add_postgres_source("orders", "host=127.0.0.1 dbname=test")
    report = build_report(system.context, "soc2", clock.now().replace(year=2000), clock.now())
    controls = {c["id"]: c for c in report["controls"]}
    assert controls["backup"]["status"] == "fail"
    assert "idle: no successful backup in the period" in controls["backup"]["findings"]
    assert "orders: no successful backup in the period" in controls["backup"]["findings"]
    assert controls["rpo"]["status"] == "fail"
    assert any(f.startswith("orders: no backup or archived WAL yet") for f in controls["rpo"]["findings"])
    assert report["overall"] != "pass"


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="Debian's chromium is needed (make test installs it)"
)
def test_html_report_renders_with_its_charts_in_headless_chromium(
    make_system: Factory, tmp_path: Path
) -> None:
    system = make_system()
    _history(system, tmp_path)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BACKUP_", "DATABASE_URL", "EQUISPLIT", "DR_"))
    }
    env.update(
        EQUISPLIT_DR_HOME=str(system.settings.home),
        BACKUP_ENCRYPTION_KEY=system.settings.backup_encryption_key.get_secret_value(),  # type: ignore[union-attr]
        PYTHONPATH=str(ROOT),
    )
    out = tmp_path / "soc2.html"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli.main",
            "compliance",
            "report",
            "--type",
            "soc2",
            "--from",
            "30d",
            "--format",
            "html",
            "--output",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    html = out.read_text()
    for chart in ("sizes", "durations", "rto", "rpo"):
        assert f"id='chart-{chart}'><svg" in html
    assert html.count("<svg") == 4 and "<script" not in html and "<link" not in html
    # nothing fetched: no resource is referenced by URL (XML namespace names are not fetched)
    assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?(https?:)?//""", html)
    json_run = subprocess.run(
        [sys.executable, "-m", "app.cli.main", "compliance", "report", "--type", "gdpr", "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json_run.returncode == 0 and json.loads(json_run.stdout)["type"] == "gdpr"
    logs = json.loads(
        subprocess.run(
            [sys.executable, "-m", "app.cli.main", "backup", "logs", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    )
    assert [r["object"] for r in logs if r["action"] == "report.generated"] == [
        "soc2",
        "gdpr",
    ]  # data access, audited

    png = tmp_path / "report.png"
    with tempfile.TemporaryDirectory() as profile:
        shot = subprocess.run(
            [
                "chromium",
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--window-size=1200,1400",
                f"--screenshot={png}",
                out.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert shot.returncode == 0 and png.exists(), shot.stderr
    image = Image.open(png).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the screenshot is (nearly) one colour"
    # the charts draw in matplotlib's blue and orange: they are on the page, not only in the source
    pixels = {pixel for _, pixel in colours}
    assert any(abs(r - 0x1F) < 30 and abs(g - 0x77) < 30 and abs(b - 0xB4) < 30 for r, g, b in pixels)
    if os.environ.get("REPORT_SCREENSHOT_COPY"):  # to look at it by eye
        shutil.copy(png, os.environ["REPORT_SCREENSHOT_COPY"])
