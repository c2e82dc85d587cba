"""What a retention plan says of one backup (kept, and why) and of one source's WAL (what goes), in the
primary and in a region alike: the shared shapes of `plan` and `regions`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app import clock


@dataclass
class BackupVerdict:
    id: str
    source: str
    type: str
    state: str
    started_at: datetime
    reasons: list[str]

    @property
    def keep(self) -> bool:
        return bool(self.reasons)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "state": self.state,
            "started_at": clock.iso(self.started_at),
            "keep": self.keep,
            "reasons": self.reasons,
        }


@dataclass
class WalVerdict:
    """One PostgreSQL source's WAL that no kept backup and no point of the window needs."""

    source: str
    names: list[str] = field(default_factory=list)
    bytes: int = 0
    kept_from: datetime | None = None  # every file archived from here on is kept (the window's base)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "delete": len(self.names),
            "bytes": self.bytes,
            "first": self.names[0] if self.names else None,
            "last": self.names[-1] if self.names else None,
            "all_kept_from": clock.iso(self.kept_from),
        }
