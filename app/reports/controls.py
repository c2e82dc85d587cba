"""Controls: each report type's list of controls, and each control's status judged from the evidence.
A control with nothing to show in the period is `no evidence`, never `pass`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PASS, FAIL, NO_EVIDENCE = "pass", "fail", "no evidence"
REPORT_TYPES = ("soc2", "gdpr", "retention")

Judge = Callable[[dict[str, Any]], tuple[str, list[str]]]


def _backups(e: dict[str, Any]) -> tuple[str, list[str]]:
    b = e["backups"]
    if not b["finished"]:
        return NO_EVIDENCE, ["no backup finished in the period"]
    findings = [
        f"{g['source']} {g['type']}: {g['succeeded']}/{g['finished']} succeeded"
        for g in b["per_policy"]
        if g["finished"] and g["succeeded"] < g["finished"]
    ]
    findings += [f"{name}: no successful backup in the period" for name in b["sources_without_backup"]]
    return (PASS if not findings else FAIL), findings


def _verification(e: dict[str, Any]) -> tuple[str, list[str]]:
    v = e["verification"]
    if not v["runs"]:
        return NO_EVIDENCE, ["no verification ran in the period"]
    findings = [f"damaged: {b}" for b in v["damaged_backups"]]
    if v["coverage"] is not None and v["coverage"] < 1:
        findings.append(
            f"{v['backups_verified']} of {v['complete_backups']} complete backups verified in the period"
        )
    return (FAIL if v["damaged_backups"] else PASS), findings


def _drills(e: dict[str, Any]) -> tuple[str, list[str]]:
    d = e["drills"]["series"]
    if not d:
        return NO_EVIDENCE, ["no restore drill in the period"]
    findings = [
        f"drill {x['id']} of {x['source']}: {x['outcome']}, RTO {x['rto_seconds']} s (target {x['rto_target_seconds']} s)"
        for x in d
        if x["outcome"] != "passed"
    ]
    return (PASS if not findings else FAIL), findings


def _rpo(e: dict[str, Any]) -> tuple[str, list[str]]:
    r = e["rpo"]
    if not r["sources"]:
        return NO_EVIDENCE, ["no source"]
    findings = [
        f"{s['source']}: no backup or archived WAL yet, nothing bounds its data loss"
        if s["rpo_seconds"] is None
        else f"{s['source']}: achieved RPO {s['rpo_seconds']} s > target {r['target_seconds']} s"
        for s in r["sources"]
        if s["rpo_seconds"] is None or s["rpo_seconds"] > r["target_seconds"]
    ]
    return (PASS if not findings else FAIL), findings


def _encryption(e: dict[str, Any]) -> tuple[str, list[str]]:
    enc = e["encryption"]
    if "error" in enc:
        return FAIL, [enc["error"]]
    return PASS, [f"{enc['data_keys']} data key(s), {enc['rotations']} rotation(s) in the period"]


def _retention(e: dict[str, Any]) -> tuple[str, list[str]]:
    r = e["retention"]
    if r["held_backups_deleted"]:
        return FAIL, [f"held backup deleted: {d['object']}" for d in r["held_backups_deleted"]]
    return PASS, [
        f"{len(r['deletions'])} backup(s) deleted, each audited; {len(r['holds_in_force'])} hold(s) in force"
    ]


def _replication(e: dict[str, Any]) -> tuple[str, list[str]]:
    rep = e["replication"]
    if "error" in rep:
        return FAIL, [rep["error"]]
    if not rep["regions"]:
        return NO_EVIDENCE, ["replication is off"]
    findings = [
        f"{r['region']}: lag {r['lag_seconds']} s > target {r['lag_target_seconds']} s"
        for r in rep["regions"]
        if r["lag_exceeded"]
    ]
    return (PASS if not findings else FAIL), findings


def _audit(e: dict[str, Any]) -> tuple[str, list[str]]:
    a = e["audit"]
    if a["ok"]:
        return PASS, [f"{a['entries']} entries verified" + ("" if a.get("anchor") else "; no anchor yet")]
    return FAIL, [a["problem"]["message"]]


def _gdpr(e: dict[str, Any]) -> tuple[str, list[str]]:
    g = e["gdpr"]
    if g["reapplication_failures"]:
        return FAIL, [f"re-application failed: {f['object']}" for f in g["reapplication_failures"]]
    return PASS, [
        f"{len(g['requests'])} erasure request(s), {len(g['reapplications'])} re-application(s) in the period"
    ]


#: id, title, judge, and which report types include the control.
CONTROLS: list[tuple[str, str, Judge, tuple[str, ...]]] = [
    ("backup", "Backups run per policy and succeed", _backups, ("soc2", "retention")),
    ("verification", "Backups are verified (results and coverage)", _verification, ("soc2",)),
    ("drills", "Restores are tested; measured RTO against target", _drills, ("soc2",)),
    ("rpo", "Achieved RPO within MAX_DATA_LOSS_SECONDS", _rpo, ("soc2",)),
    ("encryption", "Encryption at rest and key rotation", _encryption, ("soc2", "gdpr")),
    ("retention", "Retention applied; legal holds respected", _retention, ("soc2", "gdpr", "retention")),
    ("replication", "Cross-region replication lag within target", _replication, ("soc2",)),
    ("audit", "Audit trail integrity (hash chain and anchor)", _audit, ("soc2", "gdpr", "retention")),
    ("erasure", "Erasure requests re-applied on every restore", _gdpr, ("gdpr",)),
]


def judge(report_type: str, evidence: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for control_id, title, check, types in CONTROLS:
        if report_type in types:
            status, findings = check(evidence)
            rows.append({"id": control_id, "title": title, "status": status, "findings": findings})
    return rows
