"""Typed SQLAlchemy models of the catalog. Migrations in migrations/ create exactly these tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True), float: Float}


class Source(Base):
    __tablename__ = "sources"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # files | postgres
    path: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]


class Backup(Base):
    __tablename__ = "backups"
    __table_args__ = (Index("ix_backups_source_started", "source_id", "started_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"))
    type: Mapped[str] = mapped_column(String(16))  # full | incremental | differential | archive | logical
    parent_id: Mapped[str | None] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(16))  # running | complete | partial | failed | interrupted
    host: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    files_total: Mapped[int] = mapped_column(BigInteger, default=0)
    files_read: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_new: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_stored: Mapped[int] = mapped_column(BigInteger, default=0)
    chunk_count: Mapped[int] = mapped_column(BigInteger, default=0)
    new_chunk_count: Mapped[int] = mapped_column(BigInteger, default=0)
    pack_count: Mapped[int] = mapped_column(Integer, default=0)
    storage_class: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    errors: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # PostgreSQL base backups (docs/POSTGRES.md): the WAL they need, and when the backup ended.
    pg_start_lsn: Mapped[str | None] = mapped_column(String(20))
    pg_stop_lsn: Mapped[str | None] = mapped_column(String(20))
    pg_timeline: Mapped[int | None] = mapped_column(BigInteger)
    pg_start_wal: Mapped[str | None] = mapped_column(String(24))
    pg_stop_wal: Mapped[str | None] = mapped_column(String(24))
    pg_started_at: Mapped[datetime | None]
    pg_stopped_at: Mapped[datetime | None]
    # Verification (docs/VERIFY.md): when the backup was last read back whole, and since when it is
    # known to be damaged (never a parent, never `latest`, until a verification finds it whole again).
    verified_at: Mapped[datetime | None]
    damaged_at: Mapped[datetime | None]
    # Retention (docs/RETENTION.md): a deleted backup keeps its row, state `deleted`, for the record.
    deleted_at: Mapped[datetime | None]


class Pack(Base):
    __tablename__ = "packs"
    __table_args__ = (Index("ix_packs_created", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    chunk_count: Mapped[int] = mapped_column(Integer)
    backup_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime]
    #: standard | cold (docs/ARCHIVE.md): the tier of every chunk copy it holds; says its index's type.
    tier: Mapped[str] = mapped_column(String(16), default="standard", server_default="standard")


class Chunk(Base):
    """One copy of a chunk: at most one per tier (docs/ARCHIVE.md), in a pack of that tier."""

    __tablename__ = "chunks"
    __table_args__ = (Index("ix_chunks_pack", "pack_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tier: Mapped[str] = mapped_column(
        String(16), primary_key=True, default="standard", server_default="standard"
    )
    pack_id: Mapped[str] = mapped_column(ForeignKey("packs.id"))
    offset: Mapped[int] = mapped_column(BigInteger)
    length: Mapped[int] = mapped_column(Integer)
    raw_length: Mapped[int] = mapped_column(Integer)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_created", "state", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # backup | restore | rebuild | ...
    state: Mapped[str] = mapped_column(String(16))  # pending | running | succeeded | failed | cancelled
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id"))
    backup_id: Mapped[str | None] = mapped_column(String(40))
    worker: Mapped[str | None] = mapped_column(String(255))
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    task_id: Mapped[str | None] = mapped_column(String(64))
    queue: Mapped[str | None] = mapped_column(String(64))


class BackupUnit(Base):
    """One unit of a backup: files one worker reads. Its result is an object in storage (kind `units`)."""

    __tablename__ = "backup_units"

    backup_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # pending | running | done | failed
    files: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    worker: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    seconds: Mapped[float | None]
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_new: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text)


class ScheduleClaim(Base):
    """One scheduled run of one job for one source: a second beat emitting the same tick finds it taken."""

    __tablename__ = "schedule_claims"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    claimed_at: Mapped[datetime]
    job_id: Mapped[str | None] = mapped_column(String(40))


class Lock(Base):
    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_action_object", "action", "object"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    object: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class WalArchive(Base):
    """Per PostgreSQL source: its cluster, and the newest end of its WAL archive (docs/WAL.md section 6).

    The achieved RPO is now minus `newest_record_at`.
    """

    __tablename__ = "wal_archives"

    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"), primary_key=True)
    system_identifier: Mapped[str | None] = mapped_column(String(20))  # u64, as decimal text
    segment_size: Mapped[int | None] = mapped_column(BigInteger)
    newest_segment: Mapped[str | None] = mapped_column(String(64))
    newest_record_at: Mapped[datetime | None]
    last_archived_at: Mapped[datetime | None]


class WalSegment(Base):
    """One archived WAL file (segment, partial, history or backup history): written after its object."""

    __tablename__ = "wal_segments"
    __table_args__ = (
        Index("ix_wal_segments_source_timeline_segno", "source_id", "timeline", "segno"),
        Index("ix_wal_segments_archived", "archived_at"),
    )

    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)  # the WAL file name
    kind: Mapped[str] = mapped_column(String(16))  # segment | partial | history | backup
    timeline: Mapped[int] = mapped_column(BigInteger)
    segno: Mapped[int | None] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(BigInteger)
    stored_size: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(32))
    written_at: Mapped[datetime | None]
    archived_at: Mapped[datetime]


class Verification(Base):
    """One verification run: what it checked, what it read, and its outcome."""

    __tablename__ = "verifications"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(16))  # running | passed | damaged | failed
    scope: Mapped[dict[str, Any]] = mapped_column(default=dict)
    backups: Mapped[int] = mapped_column(Integer, default=0)
    packs_checked: Mapped[int] = mapped_column(Integer, default=0)
    packs_read: Mapped[int] = mapped_column(Integer, default=0)
    chunks_read: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    seconds: Mapped[float | None]
    error: Mapped[str | None] = mapped_column(Text)


class BackupVerification(Base):
    """One backup's result in one verification run."""

    __tablename__ = "backup_verifications"
    __table_args__ = (Index("ix_backup_verifications_backup", "backup_id", "checked_at"),)

    verification_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    backup_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    checked_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(16))  # passed | damaged
    packs: Mapped[int] = mapped_column(Integer, default=0)
    packs_read: Mapped[int] = mapped_column(Integer, default=0)
    chunks: Mapped[int] = mapped_column(BigInteger, default=0)
    problems: Mapped[dict[str, Any]] = mapped_column(default=dict)


class PackVerification(Base):
    """The latest data check of one pack: when its blobs were last read back, decrypted and re-hashed."""

    __tablename__ = "pack_verifications"

    pack_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    verified_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(16))  # ok | damaged | missing
    verification_id: Mapped[str] = mapped_column(String(40))
    bytes_read: Mapped[int] = mapped_column(BigInteger, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    problems: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Drill(Base):
    """One restore drill: the backup restored, how long it took against the target, what was checked."""

    __tablename__ = "drills"
    __table_args__ = (Index("ix_drills_source_started", "source_id", "started_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"))
    backup_id: Mapped[str | None] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(16))  # files | postgres
    mode: Mapped[str] = mapped_column(String(16))  # restore | full-simulation
    outcome: Mapped[str] = mapped_column(String(16))  # running | passed | failed
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    rto_seconds: Mapped[float | None]
    rto_target_seconds: Mapped[int] = mapped_column(Integer)
    point_reached: Mapped[datetime | None]
    rpo_seconds: Mapped[float | None]
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)


class LegalHold(Base):
    """A legal hold on one backup or on every backup of a source: no deletion until released."""

    __tablename__ = "legal_holds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    backup_id: Mapped[str | None] = mapped_column(String(40))
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id"))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(255))
    released_at: Mapped[datetime | None]
    released_by: Mapped[str | None] = mapped_column(String(255))
    release_reason: Mapped[str | None] = mapped_column(Text)


class ReplicaObject(Base):
    """One object's copy in one secondary region (docs/REPLICATION.md section 3)."""

    __tablename__ = "replica_objects"
    __table_args__ = (Index("ix_replica_objects_region_state", "region", "state", "source_at"),)

    region: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # keys | config | packs | wal | manifests
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    size: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))  # pending | copied | failed | damaged | missing
    #: When the object appeared in the primary: the lag is measured from here.
    source_at: Mapped[datetime]
    copied_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)


class BackupRegion(Base):
    """A backup's fate in one secondary region where it differs from the primary's (docs/RETENTION.md
    section 5): `kept` there after the primary deleted it, or `deleted` there while the primary may keep it."""

    __tablename__ = "backup_regions"
    __table_args__ = (Index("ix_backup_regions_region_state", "region", "state"),)

    backup_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    region: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))  # kept | deleted
    #: The backup's state before the primary deleted it (complete | partial), for a `kept` row.
    prior_state: Mapped[str | None] = mapped_column(String(16))
    changed_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(Text)


class ReplicationRegion(Base):
    """Per secondary region: how far discovery has read the catalog, and the last pass."""

    __tablename__ = "replication_regions"

    region: Mapped[str] = mapped_column(String(64), primary_key=True)
    discovered_through: Mapped[datetime | None]
    last_pass_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class GcCandidate(Base):
    """A pack garbage collection found unreferenced: its chunks left the index at `marked_at`; it is
    deleted once every backup running then has finished and the grace period has passed, unless a
    manifest written since needs one of its chunks (docs/GC.md)."""

    __tablename__ = "gc_candidates"

    pack_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    marked_at: Mapped[datetime]
    size: Mapped[int] = mapped_column(BigInteger)
    chunk_count: Mapped[int] = mapped_column(Integer)
    #: The backups running when the chunks left the index: they may still name one of them.
    running: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reason: Mapped[str] = mapped_column(String(32))  # unreferenced | repacked


class Incident(Base):
    """One alert condition while it lasts: opened, perhaps escalated, then resolved (docs/MONITORING.md).
    At most one unresolved incident per key; `pending` lists the channels still owed the latest message."""

    __tablename__ = "incidents"
    __table_args__ = (Index("ix_incidents_key_resolved", "key", "resolved_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(255))
    condition: Mapped[str] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(128))
    severity: Mapped[str] = mapped_column(String(16))  # warning | critical
    message: Mapped[str] = mapped_column(Text)
    opened_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    escalated_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    notified: Mapped[list[str]] = mapped_column(JSON, default=list)
    pending: Mapped[list[str]] = mapped_column(JSON, default=list)
    last_error: Mapped[str | None] = mapped_column(Text)


class Approval(Base):
    """A second person's approval of one restore or deletion (docs/AUDIT.md section 5): requested by one
    actor, granted by another, used once."""

    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(String(32))  # restore | delete
    object: Mapped[str] = mapped_column(String(255))  # a backup id, a source name, or `*`
    reason: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(255))
    requested_at: Mapped[datetime]
    granted_by: Mapped[str | None] = mapped_column(String(255))
    granted_at: Mapped[datetime | None]
    used_by: Mapped[str | None] = mapped_column(String(255))
    used_at: Mapped[datetime | None]


class Erasure(Base):
    """A GDPR erasure request (docs/GDPR.md): the SQL that forgets a subject in one database of a
    PostgreSQL source, re-applied by every restore, recovery and drill of that source."""

    __tablename__ = "erasures"
    __table_args__ = (Index("ix_erasures_source", "source_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("sources.id"))
    database: Mapped[str] = mapped_column(String(128))
    subject: Mapped[str] = mapped_column(String(255))
    sql: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(255))
    requested_at: Mapped[datetime]
