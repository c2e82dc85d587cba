"""What `dr recover` is asked to do, and what it reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from app import clock
from app.pitr.plan import RecoveryPlan


@dataclass
class RecoveryOptions:
    target_dir: Path
    dry_run: bool = False
    backup_id: str | None = None
    start: bool = False
    port: int | None = None
    action: str = "promote"
    restore_command: str | None = None
    owner: str | None = None
    #: The role `--start` connects as to watch recovery: default the source DSN's user.
    db_user: str | None = None
    keep_archiving: bool = False
    timeout: int | None = None
    #: Seconds the started server may go on refusing connections (default PITR_CONNECT_TIMEOUT).
    connect_timeout: int | None = None
    #: Where tablespaces go (`<dir>/<oid>`); default `<target>_tablespaces` beside the data directory.
    tablespace_dir: Path | None = None
    #: The started server's socket directory: the data directory, or a short one when its path is long.
    socket_dir: Path | None = None

    def tablespace_root(self, target_dir: Path) -> Path:
        return (self.tablespace_dir or target_dir.with_name(target_dir.name + "_tablespaces")).absolute()


@dataclass
class RecoveryResult:
    success: bool
    plan: RecoveryPlan
    target_dir: Path
    dry_run: bool
    started: bool = False
    restored_timestamp: datetime | None = None
    reached_lsn: str | None = None
    timeline: int | None = None
    stop_reason: str | None = None
    plan_seconds: float = 0.0
    restore_seconds: float = 0.0
    recovery_seconds: float = 0.0
    rto_seconds: float | None = None
    port: int | None = None
    message: str = ""
    problems: list[str] = field(default_factory=list)
    #: The erasure ledger's re-application (docs/GDPR.md): applied and failed request ids, or pending.
    erasures: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "dry_run": self.dry_run,
            "target_dir": str(self.target_dir),
            "started": self.started,
            "port": self.port,
            "restored_timestamp": clock.iso(self.restored_timestamp),
            "reached_lsn": self.reached_lsn,
            "timeline": self.timeline,
            "stop_reason": self.stop_reason,
            "plan_seconds": round(self.plan_seconds, 3),
            "restore_seconds": round(self.restore_seconds, 3),
            "recovery_seconds": round(self.recovery_seconds, 3),
            "rto_seconds": None if self.rto_seconds is None else round(self.rto_seconds, 3),
            "message": self.message,
            "problems": self.problems,
            "erasures": self.erasures,
            "plan": self.plan.to_json(),
        }
