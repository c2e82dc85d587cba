"""The HTML report: one self-contained page (inline CSS and SVG, no script, no external reference)."""

from __future__ import annotations

import json
from html import escape
from typing import Any

STYLE = """
body{font-family:DejaVu Sans,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
.pass{background:#d8f3dc}.fail{background:#ffd6d6}.none{background:#fff3c4}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #ddd;padding:4px}
code{font-size:12px}
"""


def _cls(status: str) -> str:
    return {"pass": "pass", "fail": "fail"}.get(status, "none")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c) if c is not None else '-')}</td>" for c in r) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(report: dict[str, Any], charts: dict[str, str]) -> str:
    e = report["evidence"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(report['type'].upper())} report</title><style>{STYLE}</style></head><body>",
        f"<h1>equisplit-dr {escape(report['type'].upper())} compliance report</h1>",
        f"<p>Period {escape(e['period']['from'])} to {escape(e['period']['to'])}; generated {escape(e['generated_at'])}; "
        f"overall: <b>{escape(report['overall'])}</b></p>",
        "<h2>Controls</h2>",
        "<table><tr><th>control</th><th>status</th><th>findings</th></tr>"
        + "".join(
            f"<tr><td>{escape(c['title'])}</td><td class='{_cls(c['status'])}'>{escape(c['status'])}</td>"
            f"<td>{'<br>'.join(escape(f) for f in c['findings']) or '-'}</td></tr>"
            for c in report["controls"]
        )
        + "</table>",
        "<h2>Charts</h2><div class='charts'>",
        *(f"<div class='chart' id='chart-{escape(name)}'>{svg}</div>" for name, svg in charts.items()),
        "</div>",
        "<h2>Backups per policy</h2>",
        _table(
            ["source", "type", "finished", "succeeded", "success rate"],
            [
                [g["source"], g["type"], g["finished"], g["succeeded"], g["success_rate"]]
                for g in e["backups"]["per_policy"]
            ],
        ),
        "<h2>Verification</h2>",
        _table(
            ["runs", "outcomes", "complete backups", "verified in period", "coverage", "damaged"],
            [
                [
                    e["verification"]["runs"],
                    json.dumps(e["verification"]["outcomes"]),
                    e["verification"]["complete_backups"],
                    e["verification"]["backups_verified"],
                    e["verification"]["coverage"],
                    ", ".join(e["verification"]["damaged_backups"]),
                ]
            ],
        ),
        "<h2>Restore drills</h2>",
        _table(
            ["started", "source", "mode", "outcome", "RTO s", "target s", "RPO s"],
            [
                [
                    d["started_at"],
                    d["source"],
                    d["mode"],
                    d["outcome"],
                    d["rto_seconds"],
                    d["rto_target_seconds"],
                    d["rpo_seconds"],
                ]
                for d in e["drills"]["series"]
            ],
        ),
        "<h2>RPO achieved</h2>",
        _table(
            ["source", "newest point", "RPO s"],
            [[s["source"], s["newest_record_at"], s["rpo_seconds"]] for s in e["rpo"]["sources"]],
        ),
        "<h2>Encryption and keys</h2>",
        _table(["field", "value"], [[k, v] for k, v in e["encryption"].items()]),
        "<h2>Retention and legal holds</h2>",
        _table(["field", "value"], [[k, v] for k, v in e["retention"]["policy"].items()]),
        _table(
            ["deleted at", "backup", "by", "reason"],
            [
                [d["at"], d["object"], d["actor"], d["detail"].get("reason")]
                for d in e["retention"]["deletions"]
            ],
        ),
        _table(
            ["hold", "backup", "source", "reason", "since", "by"],
            [
                [h["id"], h["backup"], h["source"], h["reason"], h["created_at"], h["created_by"]]
                for h in e["retention"]["holds_in_force"]
            ],
        ),
        "<h2>Replication</h2>",
        _table(
            ["region", "lag s", "target s", "last pass", "last error"],
            [
                [r["region"], r["lag_seconds"], r["lag_target_seconds"], r["last_pass_at"], r["last_error"]]
                for r in e["replication"]["regions"]
            ],
        ),
        "<h2>GDPR erasure ledger</h2>",
        _table(
            ["id", "source", "database", "subject", "SQL", "reason", "by", "at"],
            [
                [
                    r["id"],
                    r["source"],
                    r["database"],
                    r["subject"],
                    r["sql"],
                    r["reason"],
                    r["requested_by"],
                    r["requested_at"],
                ]
                for r in e["gdpr"]["requests"]
            ],
        ),
        _table(
            ["re-applied at", "where", "by", "detail"],
            [
                [r["at"], r["object"], r["actor"], json.dumps(r["detail"])]
                for r in e["gdpr"]["reapplications"]
            ],
        ),
        "<h2>Audit trail</h2>",
        _table(
            ["verified", "entries", "anchor", "problem"],
            [
                [
                    e["audit"].get("ok"),
                    e["audit"].get("entries"),
                    json.dumps(e["audit"].get("anchor")),
                    (e["audit"].get("problem") or {}).get("message"),
                ]
            ],
        ),
        "<h2>Approvals</h2>",
        _table(
            ["at", "action", "object", "by"],
            [[a["at"], a["action"], a["object"], a["actor"]] for a in e["approvals"]],
        ),
        "</body></html>",
    ]
    return "\n".join(parts)
