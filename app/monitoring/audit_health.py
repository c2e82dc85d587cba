"""The audit-trail condition: `audit verify` as a health check (docs/AUDIT.md section 2). A trail that
does not verify (an entry edited, removed or reordered; truncated or rewritten behind the newest anchor)
is critical, named with its first bad entry."""

from __future__ import annotations

from datetime import datetime

from app.audit.service import verify_trail
from app.context import Context
from app.monitoring.health import CheckResult, HealthIssue
from app.monitoring.thresholds import Thresholds


def check_audit_trail(ctx: Context, limits: Thresholds, now: datetime) -> CheckResult:
    check = verify_trail(ctx, need_anchor=False)
    result = CheckResult(
        figures={
            "entries": check.entries,
            "head": check.head_id,
            "anchored_to": check.anchor.last_id if check.anchor else None,
        }
    )
    if check.problem is not None:
        result.issues.append(
            HealthIssue(
                "critical",
                None,
                f"the audit trail does not verify: {check.problem.message}",
                condition="audit_tampered",
                subject="trail",
            )
        )
    return result
