"""What a finished backup reports."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BackupResult:
    id: str
    source: str
    type: str
    state: str
    parent_id: str | None
    stats: dict[str, int]
    errors: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    job_id: str | None = None
