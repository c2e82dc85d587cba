"""Recovery targets: what `dr recover` is asked to reach, and the settings that tell PostgreSQL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from app import clock
from app.errors import ConfigurationError
from app.timespec import parse_since
from app.wal import lsn

TIME, LSN, XID, NAME, LATEST = "time", "lsn", "xid", "name", "latest"


@dataclass(frozen=True)
class RecoveryTarget:
    kind: str
    time: datetime | None = None
    lsn: int | None = None
    xid: int | None = None
    name: str | None = None

    def describe(self) -> str:
        if self.kind == TIME:
            return f"time {clock.iso(self.time)}"
        if self.kind == LSN:
            assert self.lsn is not None
            return f"WAL position {lsn.format_lsn(self.lsn)}"
        if self.kind == XID:
            return f"transaction {self.xid}"
        if self.kind == NAME:
            return f"restore point {self.name!r}"
        return "the end of the archived WAL (latest)"

    def settings(self) -> dict[str, str]:
        """The recovery_target_* parameters (none for `latest`: replay all, then promote)."""
        if self.kind == TIME:
            assert self.time is not None
            return {"recovery_target_time": clock.as_utc(self.time).strftime("%Y-%m-%d %H:%M:%S.%f+00")}
        if self.kind == LSN:
            assert self.lsn is not None
            return {"recovery_target_lsn": lsn.format_lsn(self.lsn)}
        if self.kind == XID:
            return {"recovery_target_xid": str(self.xid)}
        if self.kind == NAME:
            assert self.name is not None
            return {"recovery_target_name": self.name}
        return {}

    def to_json(self) -> dict[str, str | int | None]:
        return {
            "kind": self.kind,
            "time": clock.iso(self.time),
            "lsn": lsn.format_lsn(self.lsn) if self.lsn is not None else None,
            "xid": self.xid,
            "name": self.name,
        }


def parse_target(
    *,
    timestamp: str | datetime | None = None,
    wal_position: str | None = None,
    xid: str | int | None = None,
    name: str | None = None,
    latest: bool = False,
) -> RecoveryTarget:
    """Exactly one target. A time is ISO 8601 (UTC when it names no offset), or `latest`."""
    if isinstance(timestamp, str) and timestamp.strip().lower() == "latest":
        timestamp, latest = None, True
    given = [v for v in (timestamp, wal_position, xid, name) if v is not None] + ([True] if latest else [])
    if len(given) != 1:
        raise ConfigurationError(
            "give exactly one recovery target",
            hint="--timestamp TIME, --lsn X/Y, --xid N, --name RESTORE_POINT, or --timestamp latest",
        )
    if latest:
        return RecoveryTarget(LATEST)
    if timestamp is not None:
        if isinstance(timestamp, datetime):
            return RecoveryTarget(TIME, time=clock.as_utc(timestamp))
        if re.fullmatch(r"\d+\s*[smhdw]", timestamp.strip()):
            raise ConfigurationError(
                f"{timestamp!r} is a duration; a recovery target is a time",
                hint="give an ISO 8601 time such as 2026-11-27T10:30:00Z",
            )
        return RecoveryTarget(TIME, time=parse_since(timestamp))
    if wal_position is not None:
        return RecoveryTarget(LSN, lsn=lsn.parse(wal_position))
    if xid is not None:
        text = str(xid).strip()
        if not text.isdigit():
            raise ConfigurationError(f"--xid {xid!r} is not a transaction id", hint="a number, e.g. 1234")
        return RecoveryTarget(XID, xid=int(text))
    assert name is not None
    if not name or len(name) > 63:
        raise ConfigurationError("a restore point name is 1 to 63 characters")
    return RecoveryTarget(NAME, name=name)
