"""`BackupSystem`: the Python API of the spec, over one repository and its catalog."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import clock
from app.audit.access import record_access
from app.catalog import audit, sources
from app.catalog.backups import LOGICAL_TYPE, backup_stats, get_backup, list_backups
from app.catalog.db import migrate, transaction
from app.catalog.models import Backup
from app.context import Context
from app.errors import ConfigurationError, MasterKeyError, SourceError
from app.repo.keys import MasterKey
from app.repo.repository import Repository
from app.repo.rotation import pending_key_file
from app.settings import Settings, load_settings

if TYPE_CHECKING:  # what only one command needs is imported where it runs: a command starts cheaply
    from app.audit.anchors import AnchorHead
    from app.audit.trail import TrailCheck
    from app.backup.engine import BackupResult
    from app.catalog.rebuild import RebuildReport
    from app.drills.result import DrillResult
    from app.logical.restore import ImportReport
    from app.monitoring.probes import Probe
    from app.repo.rotation import Rotation
    from app.restore.plan import RestorePlan
    from app.retention.apply import ApplyReport
    from app.retention.plan import RetentionPlan
    from app.verify.report import VerificationReport

Progress = Callable[[int, int], None]


@dataclass
class InitReport:
    repository_id: str
    created_repository: bool
    generated_key_file: Path | None


def backup_summary(backup: Backup, source: str) -> dict[str, Any]:
    """The fields every listing shows, JSON-ready."""
    return {
        "id": backup.id,
        "source": source,
        "type": backup.type,
        "state": backup.state,
        "parent": backup.parent_id,
        "started_at": clock.iso(backup.started_at),
        "finished_at": clock.iso(backup.finished_at),
        **{k: v for k, v in backup_stats(backup).items() if k != "files_read"},
        "dedup_ratio": round(backup.bytes_total / backup.bytes_stored, 2) if backup.bytes_stored else None,
        "error": backup.error,
        "verified_at": clock.iso(backup.verified_at),
        "damaged": backup.damaged_at is not None,
    }


class BackupSystem:
    """Backups and restores of registered sources. Construct with settings, or from the environment."""

    def __init__(
        self, settings: Settings | None = None, *, actor: str | None = None, region: str | None = None
    ) -> None:
        """With `region`, restores and verifications read that secondary region's storage, never the
        primary's (docs/REPLICATION.md section 7)."""
        self.settings = settings or load_settings()
        self.context = Context(self.settings, region=region)
        self.actor = actor

    def close(self) -> None:
        self.context.close()

    def __enter__(self) -> BackupSystem:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # Set-up -----------------------------------------------------------------------------------------

    def init(self) -> InitReport:
        """Migrate the catalog and create the repository (and, on embedded defaults, a key file)."""
        ctx = self.context
        migrate(ctx.engine)
        generated = None
        s = self.settings
        exists = ctx.storage.stat("keys", "keyring") is not None
        if (
            s.backup_encryption_key is None
            and s.backup_encryption_key_file is None
            and not s.default_key_file.exists()
        ):
            if exists:  # a fresh key cannot open it: write none
                pending = pending_key_file(s.default_key_file)
                raise MasterKeyError(
                    f"storage {ctx.storage.location} already holds a repository, and no master key is set "
                    f"(BACKUP_ENCRYPTION_KEY, BACKUP_ENCRYPTION_KEY_FILE, or {s.default_key_file})",
                    hint="set BACKUP_ENCRYPTION_KEY or BACKUP_ENCRYPTION_KEY_FILE to the repository's key"
                    + (f"; a key rotation left a new key in {pending}" if pending.exists() else "")
                    + "; nothing was written",
                )
            MasterKey.generate().write_file(s.default_key_file)
            generated = s.default_key_file
        if exists:
            repo = ctx.repository  # verifies the key
            created = False
        else:
            repo = Repository.init(ctx.storage, ctx.master_key(), cache_root=s.cache_dir)
            repo.master_source = ctx.master_key
            created = True
        ctx.__dict__["repository"] = repo
        with transaction(ctx.sessions) as session:
            if created:
                audit.append(
                    session, "repository.created", repo.id, {"storage": ctx.storage.location}, self.actor
                )
        return InitReport(repo.id, created, generated)

    def add_source(self, name: str, path: Path, *, queue: str | None = None) -> dict[str, Any]:
        with transaction(self.context.sessions) as session:
            source = sources.add_source(session, name, path=path, queue=queue)
            audit.append(session, "source.added", name, {"path": source.path, "queue": queue}, self.actor)
            return {"name": source.name, "kind": source.kind, "path": source.path, "queue": queue or "chunks"}

    def add_postgres_source(self, name: str, dsn: str, pgdata: Path | None = None) -> dict[str, Any]:
        """Register a PostgreSQL cluster; the DSN is stored (and shown) without its password."""
        with transaction(self.context.sessions) as session:
            source = sources.add_postgres_source(session, name, dsn, pgdata)
            detail = {"kind": "postgres", "dsn": source.options["dsn"], "pgdata": source.path}
            audit.append(session, "source.added", name, detail, self.actor)
            return {
                "name": source.name,
                "kind": source.kind,
                "dsn": source.options["dsn"],
                "pgdata": source.path,
            }

    def list_sources(self) -> list[dict[str, Any]]:
        with self.context.sessions() as session:
            return [
                {"name": s.name, "kind": s.kind, "path": s.path, "created_at": clock.iso(s.created_at)}
                for s in sources.list_sources(session)
            ]

    def _default_source(self, source: str | None) -> str:
        if source:
            return source
        names: list[str] = [s["name"] for s in self.list_sources()]
        if len(names) == 1:
            return names[0]
        raise SourceError(
            "which source? the catalog has " + (f"{len(names)} sources" if names else "none"),
            hint="pass the source name",
        )

    # Backups ----------------------------------------------------------------------------------------

    def create_backup(
        self,
        source: str | None,
        backup_type: str,
        progress: Progress | None = None,
        *,
        checksum: bool | None = None,
        allow_shrink: bool = False,
    ) -> BackupResult:
        """A backup of `source` now. `checksum` re-reads every file (default: BACKUP_PG_CHECKSUM_MODE
        for PostgreSQL sources, off for file trees). The result's `state` is `complete` or `partial`
        (files vanished or replaced while it ran, unreadable files, or a source that shrank past
        BACKUP_SHRINK_WARN_PERCENT since its last complete backup unless `allow_shrink`); its `errors`
        and `warnings` name each file and why."""
        from app.backup.engine import run_backup

        return run_backup(
            self.context,
            self._default_source(source),
            backup_type,
            progress=progress,
            actor=self.actor,
            checksum=checksum,
            allow_shrink=allow_shrink,
        )

    def create_full_backup(
        self, source: str | None = None, progress: Progress | None = None, *, allow_shrink: bool = False
    ) -> BackupResult:
        return self.create_backup(source, "full", progress, allow_shrink=allow_shrink)

    def create_incremental_backup(
        self, source: str | None = None, progress: Progress | None = None, *, allow_shrink: bool = False
    ) -> BackupResult:
        return self.create_backup(source, "incremental", progress, allow_shrink=allow_shrink)

    def create_differential_backup(
        self, source: str | None = None, progress: Progress | None = None, *, allow_shrink: bool = False
    ) -> BackupResult:
        return self.create_backup(source, "differential", progress, allow_shrink=allow_shrink)

    def create_archive_backup(
        self, source: str | None = None, progress: Progress | None = None, *, allow_shrink: bool = False
    ) -> BackupResult:
        return self.create_backup(source, "archive", progress, allow_shrink=allow_shrink)

    def create_logical_export(
        self, source: str | None, database: str | None = None, progress: Progress | None = None
    ) -> BackupResult:
        """A `pg_dump` of one database of a PostgreSQL source (default: its DSN's database), stored as a
        backup of type `logical` (docs/POSTGRES.md section 5)."""
        from app.logical.export import export_database

        return export_database(
            self.context, self._default_source(source), database, progress=progress, actor=self.actor
        )

    def restore_logical_export(
        self,
        backup_id: str,
        target_dsn: str,
        *,
        source: str | None = None,
        no_privileges: bool = False,
        progress: Progress | None = None,
    ) -> ImportReport:
        """Import a logical export (an id, or `latest` of `source`) into the empty database at
        `target_dsn`; a non-empty one is refused before anything is written."""
        from app.logical.restore import import_export

        return import_export(
            self.context,
            backup_id,
            target_dsn,
            source=source,
            no_privileges=no_privileges,
            progress=progress,
            actor=self.actor,
        )

    def list_backups(self, source: str | None = None) -> list[dict[str, Any]]:
        with self.context.sessions() as session:
            source_id = sources.get_source(session, source).id if source else None
            return [backup_summary(b, name) for b, name in list_backups(session, source_id)]

    def show_backup(
        self, selector: str, source: str | None = None, *, files: bool = False, audited: bool = True
    ) -> dict[str, Any]:
        """One backup's summary (and with `files`, its manifest's entries). Audited as `data.accessed`
        unless `audited` is False (a command printing the summary of the backup it just made)."""
        from app.catalog.backups import resolve
        from app.catalog.models import Source

        with self.context.sessions() as session:
            source_id = sources.get_source(session, source).id if source else None
            backup = resolve(session, selector, source_id)
            src = session.get(Source, backup.source_id)
            info = backup_summary(backup, src.name if src else "?")
            info.update(
                files_read=backup.files_read,
                host=backup.host,
                storage_class=backup.storage_class,
                errors=backup.errors.get("errors", []),
                warnings=backup.errors.get("warnings", []),
            )
            if backup.pg_stop_lsn is not None:
                info["postgres"] = {
                    "timeline": backup.pg_timeline,
                    "start_lsn": backup.pg_start_lsn,
                    "stop_lsn": backup.pg_stop_lsn,
                    "start_wal": backup.pg_start_wal,
                    "stop_wal": backup.pg_stop_wal,
                    "stopped_at": clock.iso(backup.pg_stopped_at),
                }
        info["units"] = self._units(backup.id)
        manifest: dict[str, Any] | None = None
        if files and backup.state in ("complete", "partial"):
            manifest = self.context.repository.read_manifest(backup.id, cached=True)
        if backup.type == LOGICAL_TYPE and backup.state == "complete":
            header = (
                manifest["backup"] if manifest else self.context.repository.read_manifest_header(backup.id)
            )
            info["logical"] = header.get("logical")
        if manifest is not None:
            info["entries"] = [
                {k: e.get(k) for k in ("path", "type", "size", "mode", "mtime_ns")}
                for e in manifest["entries"]
            ]
        read = "backup files" if manifest is not None else "backup"
        extra = {"entries": len(info["entries"])} if manifest is not None else {}
        if audited:
            record_access(self.context, backup.id, read, self.actor, **extra)
        return info

    def _units(self, backup_id: str) -> list[dict[str, Any]]:
        from sqlalchemy import select

        from app.catalog.models import BackupUnit

        with self.context.sessions() as session:
            rows = session.scalars(
                select(BackupUnit).where(BackupUnit.backup_id == backup_id).order_by(BackupUnit.number)
            )
            return [
                {
                    "unit": u.number,
                    "state": u.state,
                    "files": u.files,
                    "bytes": u.bytes,
                    "worker": u.worker,
                    "attempts": u.attempts,
                    "seconds": u.seconds,
                    "started_at": clock.iso(u.started_at),
                    "finished_at": clock.iso(u.finished_at),
                    "error": u.error,
                }
                for u in rows
            ]

    def get_backup_row(self, backup_id: str) -> Backup:
        with self.context.sessions() as session:
            return get_backup(session, backup_id)

    # Restore, keys, catalog ------------------------------------------------------------------------------

    def restore(
        self,
        backup_id: str,
        target: Path,
        *,
        source: str | None = None,
        paths: list[str] | None = None,
        dry_run: bool = False,
        overwrite: bool = False,
        skip_existing: bool = False,
        keep_partial: bool = False,
        progress: Progress | None = None,
        within_roots: bool = False,
        approval: int | None = None,
        request_only: bool = False,
    ) -> RestorePlan:
        """Restore a backup into `target`; `within_roots` (a task from the broker) refuses a target
        outside BACKUP_RESTORE_ROOTS, links resolved, before anything is read or written. With
        DR_APPROVAL_REQUIRED=restore, a restore (not a dry run) needs a granted `approval` (docs/AUDIT.md)."""
        if within_roots:
            from app.restore.roots import confine

            target = confine(target, self.context.settings.restore_roots)
        if not dry_run and not request_only:
            self._use_approval("restore", [backup_id, *([source] if source else [])], approval)
        from app.restore.engine import restore_backup

        plan = restore_backup(
            self.context,
            backup_id,
            target,
            source=source,
            paths=paths,
            dry_run=dry_run,
            overwrite=overwrite,
            skip_existing=skip_existing,
            keep_partial=keep_partial,
            progress=progress,
            actor=self.actor,
            request_only=request_only,
        )
        if dry_run:  # a dry run shows what the backup holds; a restore audits itself when it ends
            record_access(self.context, plan.backup_id, "restore plan", self.actor, files=plan.files)
        return plan

    def rotate_keys(
        self,
        new_master: MasterKey | None = None,
        *,
        new_data_key: bool = True,
        new_key_origin: str | None = None,
    ) -> Rotation:
        """Re-wrap the keys under `new_master` (where `new_key_origin` says it is kept), or under a key
        generated to replace the default key file; crash-safe and safe to retry (app/repo/rotation.py):
        a retry finishes what an interrupted rotation began."""
        s = self.settings
        key_file = None
        if new_master is None:
            if s.backup_encryption_key is not None or s.backup_encryption_key_file is not None:
                raise MasterKeyError(
                    "no new master key given", hint="pass --new-key-file FILE or set BACKUP_NEW_ENCRYPTION_KEY"
                )
            key_file = s.default_key_file
        from app.repo.rotation import rotate as rotate_master_key

        done = rotate_master_key(
            self.context.storage,
            self.context.master_key,
            new_master,
            new_data_key=new_data_key,
            new_key_origin=new_key_origin,
            key_file=key_file,
        )
        repo = done.repository
        self.context.__dict__["repository"] = repo
        with transaction(self.context.sessions) as session:
            audit.append(
                session,
                "keys.rotated",
                repo.id,
                {
                    "current_key_id": repo.keyring.current_key_id.hex(),
                    "new_data_key": new_data_key and not done.finished_interrupted,
                    "finished_interrupted": done.finished_interrupted,
                },
                self.actor,
            )
        self.anchor_audit_trail()  # a key event: seal the trail's head with the new keys
        return done

    def verify_backup(
        self,
        backup_id: str | None = None,
        *,
        source: str | None = None,
        since: datetime | None = None,
        data: str = "incremental",
        sample: float | None = None,
    ) -> VerificationReport:
        """Verify one backup (`backup_id`), a source's backups, or every backup (docs/VERIFY.md).
        `data`: none (structure only), incremental, sample (`sample` share of the packs) or all."""
        from app.verify.options import options_from_settings
        from app.verify.run import verify_backups

        options = options_from_settings(
            self.settings,
            backup_ids=(backup_id,) if backup_id else (),
            source=source,
            since=since,
            data=data,
            sample=sample,
        )
        return verify_backups(self.context, options, actor=self.actor)

    def run_restore_drills(
        self, source: str | None = None, *, mode: str = "restore", owner: str | None = None
    ) -> list[DrillResult]:
        """A restore drill of each source (or `source`): the latest backup restored to a scratch place,
        checked and timed against RTO_TARGET, recorded; `mode` restore, full-simulation or dry-run
        (plans, writes nothing). docs/DRILLS.md."""
        from app.drills.run import MODES, run_drills

        if mode not in MODES:
            raise ConfigurationError(f"unknown drill mode {mode!r}", hint=f"use one of {', '.join(MODES)}")
        return run_drills(self.context, source=source, mode=mode, owner=owner, actor=self.actor)

    def test_connection(self) -> list[Probe]:
        """Storage round trip, catalog, keys, broker and each PostgreSQL source (the runbook's check)."""
        from app.monitoring.probes import test_connections

        return test_connections(self.context)

    def storage_status(self) -> dict[str, Any]:
        """Objects and bytes per kind and storage class, the catalog's view, free space where known."""
        from app.monitoring.storage_status import storage_status

        return storage_status(self.context)

    # Audit trail and approvals (docs/AUDIT.md) ---------------------------------------------------------

    def verify_audit_trail(self, *, need_anchor: bool = True) -> TrailCheck:
        from app.audit.service import verify_trail

        return verify_trail(self.context, need_anchor=need_anchor)

    def anchor_audit_trail(self) -> list[AnchorHead]:
        from app.audit.service import anchor_trail

        return anchor_trail(self.context)

    def _use_approval(self, action: str, objects: list[str], approval: int | None) -> None:
        from app.audit.approvals import use_approval

        if action not in self.settings.dr_approval_required:
            return
        with transaction(self.context.sessions) as session:
            use_approval(
                session, self.settings.dr_approval_required, action, objects, approval, self.actor or audit.default_actor()
            )

    def request_approval(self, action: str, obj: str, reason: str) -> dict[str, Any]:
        from app.audit.approvals import approval_json, request_approval

        with transaction(self.context.sessions) as session:
            return approval_json(request_approval(session, action, obj, reason, self.actor or audit.default_actor()))

    def grant_approval(self, approval_id: int) -> dict[str, Any]:
        from app.audit.approvals import approval_json, grant_approval

        with transaction(self.context.sessions) as session:
            return approval_json(grant_approval(session, approval_id, self.actor or audit.default_actor()))

    def list_approvals(self) -> list[dict[str, Any]]:
        from app.audit.approvals import list_approvals

        with self.context.sessions() as session:
            return list_approvals(session)

    # GDPR erasure ledger (docs/GDPR.md) ------------------------------------------------------------------

    def record_erasure(self, source: str, database: str, subject: str, sql: str, reason: str) -> dict[str, Any]:
        from app.gdpr.ledger import erasure_json, record_erasure

        with transaction(self.context.sessions) as session:
            row = record_erasure(session, source, database, subject, sql, reason, self.actor or audit.default_actor())
            return erasure_json(row, source)

    def list_erasures(self, source: str | None = None) -> list[dict[str, Any]]:
        from app.gdpr.ledger import erasures_of

        with self.context.sessions() as session:
            rows = erasures_of(session, source)
        record_access(self.context, "erasures", "erasure ledger", self.actor, source=source, entries=len(rows))
        return rows

    # Retention and legal holds (docs/RETENTION.md) ------------------------------------------------------

    def plan_retention(self, source: str | None = None, *, region: str | None = None) -> RetentionPlan:
        """Every backup with the rules that keep it (none: it would be deleted), the WAL to thin, and
        each secondary region's own plan (only `region`'s, when named)."""
        from app.retention.plan import plan_retention

        return plan_retention(self.context, source=source, region=region)

    def apply_retention(
        self, source: str | None = None, *, confirm: bool = False, approval: int | None = None
    ) -> tuple[RetentionPlan, ApplyReport]:
        """Plan, then (only with `confirm`) delete what no rule, hold or window keeps, each audited."""
        from app.retention.apply import apply_plan
        from app.retention.plan import plan_retention

        if confirm:
            self._use_approval("delete", [source or "*"], approval)

        plan = plan_retention(self.context, source=source)
        return plan, apply_plan(self.context, plan, confirm=confirm, actor=self.actor)

    def add_hold(self, reason: str, *, backup_id: str | None = None, source: str | None = None) -> dict[str, Any]:
        """A legal hold on one backup or on every backup of a source; audited."""
        from app.retention.holds import place_hold

        return place_hold(self.context, reason, backup_id=backup_id, source=source, actor=self.actor)

    def release_hold(self, hold_id: int, reason: str) -> dict[str, Any]:
        from app.retention.holds import release

        return release(self.context, hold_id, reason, actor=self.actor)

    def list_holds(self, *, include_released: bool = False) -> list[dict[str, Any]]:
        from app.retention.holds import list_holds

        return list_holds(self.context, include_released=include_released)

    def rebuild_catalog(self) -> RebuildReport:
        """Rebuild the catalog from storage alone, creating its schema if it has none; a damaged SQLite
        catalog is first set aside as `<file>.damaged-<time>` (docs/ARCHITECTURE.md)."""
        from app.audit.recovery import restore_from_anchors
        from app.catalog.rebuild import prepare_catalog, rebuild_catalog

        repo = self.context.repository  # the key is checked before the catalog is touched
        prepared = prepare_catalog(self.context.engine)
        # The configuration is recorded after the anchored entries are back (they keep their ids).
        process, self.context.process = self.context.process, None
        with transaction(self.context.sessions) as session:
            # The trail first: anchored entries keep their ids, before this rebuild appends its own.
            trail = restore_from_anchors(session, repo)
            report = rebuild_catalog(session, repo)
            report.audit = trail.to_json()
            if prepared.damaged_catalog is not None:
                report.damaged_catalog, report.damage = str(prepared.damaged_catalog), prepared.damage
            audit.append(
                session,
                "catalog.rebuilt",
                repo.id,
                {
                    "packs": report.packs,
                    "chunks": report.chunks,
                    "backups": report.backups,
                    "jobs_created": report.jobs_created,
                    "wal_files": report.wal_files,
                    "damaged_catalog": report.damaged_catalog,
                },
                self.actor,
            )
        self.context.process = process
        self.context.record_configuration()
        return report

