"""What one drill measured and found."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app import clock


@dataclass
class DrillResult:
    id: str
    source: str
    kind: str  # files | postgres
    mode: str  # restore | full-simulation | dry-run
    backup_id: str | None
    started_at: datetime
    rto_target_seconds: int
    outcome: str = "running"  # passed | failed | planned
    rto_seconds: float | None = None
    point_reached: datetime | None = None
    rpo_seconds: float | None = None
    files: int = 0
    bytes: int = 0
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def within_target(self) -> bool | None:
        return None if self.rto_seconds is None else self.rto_seconds <= self.rto_target_seconds

    def detail(self) -> dict[str, Any]:
        return {"files": self.files, "bytes": self.bytes, "checks": self.checks, "problems": self.problems}

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "kind": self.kind,
            "mode": self.mode,
            "backup": self.backup_id,
            "outcome": self.outcome,
            "started_at": clock.iso(self.started_at),
            "rto_seconds": None if self.rto_seconds is None else round(self.rto_seconds, 3),
            "rto_target_seconds": self.rto_target_seconds,
            "within_rto_target": self.within_target,
            "point_reached": clock.iso(self.point_reached),
            "rpo_seconds": None if self.rpo_seconds is None else round(self.rpo_seconds, 1),
            **self.detail(),
            "error": self.error,
        }
