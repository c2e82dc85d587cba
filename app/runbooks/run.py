"""Run a procedure's steps in order: each one timed, logged and audited; the first failure stops the
procedure and the steps after it are reported as skipped, never as done."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app import clock
from app.catalog import audit
from app.catalog.db import transaction
from app.context import Context
from app.errors import EquisplitError

log = logging.getLogger("equisplit_dr.runbook")

OK, FAILED, SKIPPED, PLANNED = "ok", "failed", "skipped", "planned"


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    #: Does the step's work; returns a one-line detail. Raises EquisplitError (or returns via `fail`).
    action: Callable[[], str]


@dataclass
class StepResult:
    name: str
    description: str
    outcome: str
    started_at: str | None = None
    seconds: float | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "outcome": self.outcome,
            "started_at": self.started_at,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
            "detail": self.detail,
        }


@dataclass
class ProcedureResult:
    procedure: str
    dry_run: bool
    steps: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def success(self) -> bool:
        return all(s.outcome in (OK, PLANNED) for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "procedure": self.procedure,
            "dry_run": self.dry_run,
            "success": self.success,
            "seconds": round(self.seconds, 3),
            "steps": [s.to_json() for s in self.steps],
        }


class StepFailed(Exception):
    """A step found what it checks wrong: its message is the step's detail."""


def run_procedure(
    ctx: Context,
    procedure: str,
    steps: list[Step],
    *,
    dry_run: bool,
    actor: str | None,
    on_step: Callable[[StepResult], None] | None = None,
) -> ProcedureResult:
    result = ProcedureResult(procedure, dry_run)
    if dry_run:
        result.steps = [StepResult(s.name, s.description, PLANNED) for s in steps]
        return result
    began = time.monotonic()
    _audit(ctx, "runbook.started", procedure, {"steps": [s.name for s in steps]}, actor)
    failed = False
    for step in steps:
        if failed:
            result.steps.append(
                StepResult(step.name, step.description, SKIPPED, detail="an earlier step failed")
            )
            continue
        started, at = time.monotonic(), clock.iso(clock.now())
        log.info("runbook %s: step %s started", procedure, step.name)
        try:
            detail, outcome = step.action(), OK
        except StepFailed as exc:
            detail, outcome = str(exc), FAILED
        except EquisplitError as exc:
            detail, outcome = exc.message + (f" ({exc.hint})" if exc.hint else ""), FAILED
        seconds = time.monotonic() - started
        step_result = StepResult(step.name, step.description, outcome, at, seconds, detail)
        result.steps.append(step_result)
        log.info("runbook %s: step %s %s in %.1f s: %s", procedure, step.name, outcome, seconds, detail)
        _audit(ctx, "runbook.step", f"{procedure}/{step.name}", step_result.to_json(), actor)
        if on_step is not None:
            on_step(step_result)
        failed = outcome == FAILED
    result.seconds = time.monotonic() - began
    _audit(
        ctx,
        "runbook.finished" if result.success else "runbook.failed",
        procedure,
        {"seconds": round(result.seconds, 3), "steps": {s.name: s.outcome for s in result.steps}},
        actor,
    )
    return result


def _audit(ctx: Context, action: str, obj: str, detail: dict[str, Any], actor: str | None) -> None:
    with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
        audit.append(session, action, obj, detail, actor)
