"""The outcome of one verification run, per backup and in total."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.verify.problems import Problem


@dataclass
class BackupOutcome:
    backup_id: str
    source: str
    outcome: str  # passed | damaged
    packs: int
    packs_read: int
    chunks: int
    problems: list[Problem] = field(default_factory=list)
    healed: bool = False  # was marked damaged, now found whole

    def to_json(self) -> dict[str, Any]:
        return {
            "backup": self.backup_id,
            "source": self.source,
            "outcome": self.outcome,
            "packs": self.packs,
            "packs_read": self.packs_read,
            "chunks": self.chunks,
            "healed": self.healed,
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass
class VerificationReport:
    id: str
    outcome: str  # passed | damaged
    data: str
    backups: list[BackupOutcome]
    packs_checked: int
    packs_read: int
    chunks_read: int
    bytes_read: int
    seconds: float
    damaged_packs: list[str]
    chunks_forgotten: int

    @property
    def damaged(self) -> list[BackupOutcome]:
        return [b for b in self.backups if b.outcome != "passed"]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "outcome": self.outcome,
            "data": self.data,
            "backups_checked": len(self.backups),
            "backups_damaged": len(self.damaged),
            "packs_checked": self.packs_checked,
            "packs_read": self.packs_read,
            "chunks_read": self.chunks_read,
            "bytes_read": self.bytes_read,
            "seconds": round(self.seconds, 3),
            "mb_per_second": round(self.bytes_read / 1e6 / self.seconds, 1) if self.seconds > 0 else None,
            "damaged_packs": self.damaged_packs,
            "chunks_forgotten": self.chunks_forgotten,
            "backups": [b.to_json() for b in self.backups],
        }
