"""Build a compliance report: collect the evidence, judge the controls, render JSON or HTML."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from app.catalog import audit
from app.catalog.db import transaction
from app.context import Context
from app.errors import ConfigurationError
from app.reports.controls import FAIL, NO_EVIDENCE, REPORT_TYPES, judge
from app.reports.evidence import collect

FORMATS = ("html", "json")


def build_report(
    ctx: Context, report_type: str, start: datetime, end: datetime, *, actor: str | None = None
) -> dict[str, Any]:
    if report_type not in REPORT_TYPES:
        raise ConfigurationError(
            f"unknown report type {report_type!r}", hint=f"--type is one of {', '.join(REPORT_TYPES)}"
        )
    if end <= start:
        raise ConfigurationError(f"--from ({start.isoformat()}) must be before --to ({end.isoformat()})")
    evidence = collect(ctx, start, end)
    controls = judge(report_type, evidence)
    statuses = {c["status"] for c in controls}
    overall = FAIL if FAIL in statuses else NO_EVIDENCE if NO_EVIDENCE in statuses else "pass"
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:  # reading the evidence is data access
        audit.append(
            session,
            "report.generated",
            report_type,
            {"from": evidence["period"]["from"], "to": evidence["period"]["to"], "overall": overall},
            actor,
        )
    return {"type": report_type, "overall": overall, "controls": controls, "evidence": evidence}


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, sort_keys=True, default=str) + "\n"
    if fmt == "html":
        from app.reports.charts import report_charts
        from app.reports.html import render_html

        return render_html(report, report_charts(report["evidence"]))
    raise ConfigurationError(f"unknown format {fmt!r}", hint="--format is html or json")
