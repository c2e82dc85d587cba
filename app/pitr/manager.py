"""`DisasterRecoveryManager`: the Python API of point-in-time recovery (docs/PITR.md)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from app import clock
from app.context import Context
from app.errors import SourceError
from app.pitr.execute import RecoveryOptions, RecoveryResult, plan_recovery, recover
from app.pitr.plan import RecoveryPlan
from app.pitr.target import RecoveryTarget, parse_target
from app.settings import Settings, load_settings


class DisasterRecoveryManager:
    """Recoveries of the PostgreSQL sources of one repository and catalog."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        source: str | None = None,
        context: Context | None = None,
        actor: str | None = None,
        region: str | None = None,
    ) -> None:
        """With `region`, the base backup and WAL are read from that secondary region's storage."""
        self.settings = settings or (context.settings if context else load_settings())
        self.context = context or Context(self.settings, region=region)
        self._owns_context = context is None
        self.source = source
        self.actor = actor

    def close(self) -> None:
        if self._owns_context:
            self.context.close()

    def __enter__(self) -> DisasterRecoveryManager:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _source(self, source: str | None) -> str:
        chosen = source or self.source
        if chosen:
            return chosen
        from app.catalog.sources import list_sources

        with self.context.sessions() as session:
            names = [s.name for s in list_sources(session) if s.kind == "postgres"]
        if len(names) == 1:
            return names[0]
        raise SourceError(
            "which PostgreSQL source? the catalog has " + (f"{len(names)}" if names else "none"),
            hint="pass source=NAME (--source NAME)",
        )

    def plan_point_in_time_recovery(
        self, target: RecoveryTarget, *, source: str | None = None, backup_id: str | None = None
    ) -> RecoveryPlan:
        return plan_recovery(self.context, self._source(source), target, backup_id)

    def execute_point_in_time_recovery(
        self,
        target_time: datetime | str | None = None,
        dry_run: bool = False,
        *,
        source: str | None = None,
        target_dir: Path | str | None = None,
        lsn: str | None = None,
        xid: str | int | None = None,
        name: str | None = None,
        latest: bool = False,
        backup_id: str | None = None,
        start: bool = False,
        port: int | None = None,
        action: str = "promote",
        restore_command: str | None = None,
        owner: str | None = None,
        keep_archiving: bool = False,
        timeout: int | None = None,
        tablespace_dir: Path | str | None = None,
        user: str | None = None,
        connect_timeout: int | None = None,
    ) -> RecoveryResult:
        """Recover `source` to `target_time` (or `lsn`, `xid`, restore point `name`, or `latest`) into
        `target_dir` (default `<home>/recovered/<source>-<now>`). A dry run plans and checks only.
        With `start`, recovery is watched as role `user` (default: the source DSN's user).

        The result says `success`, the `restored_timestamp` reached and the measured `rto_seconds`;
        refusals (an unreachable target, a missing or corrupt WAL segment, a busy target directory)
        raise RecoveryError before anything is written."""
        chosen = self._source(source)
        target = parse_target(timestamp=target_time, wal_position=lsn, xid=xid, name=name, latest=latest)
        if target_dir is None:
            stamp = clock.now().strftime("%Y%m%dT%H%M%SZ")
            target_dir = self.settings.home / "recovered" / f"{chosen}-{stamp}"
        options = RecoveryOptions(
            target_dir=Path(target_dir),
            dry_run=dry_run,
            backup_id=backup_id,
            start=start,
            port=port,
            action=action,
            restore_command=restore_command,
            owner=owner,
            db_user=user,
            keep_archiving=keep_archiving,
            timeout=timeout,
            connect_timeout=connect_timeout,
            tablespace_dir=Path(tablespace_dir) if tablespace_dir else None,
        )
        return recover(self.context, chosen, target, options, actor=self.actor)
