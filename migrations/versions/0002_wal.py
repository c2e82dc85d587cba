"""WAL archiving: one row per archived WAL file, and per source the newest end of its archive.

Portable types only (no ENUM), as 0001, so the same revision runs on SQLite and PostgreSQL.

Revision ID: 0002_wal
Revises: 0001_initial
Create Date: 2026-11-27 04:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_wal"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "wal_archives",
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("system_identifier", sa.String(length=20), nullable=True),
        sa.Column("segment_size", sa.BigInteger(), nullable=True),
        sa.Column("newest_segment", sa.String(length=64), nullable=True),
        sa.Column("newest_record_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], name="wal_archives_source_id_fkey"),
        sa.PrimaryKeyConstraint("source_id"),
    )
    op.create_table(
        "wal_segments",
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("timeline", sa.BigInteger(), nullable=False),
        sa.Column("segno", sa.BigInteger(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("stored_size", sa.BigInteger(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], name="wal_segments_source_id_fkey"),
        sa.PrimaryKeyConstraint("source_id", "name"),
    )
    op.create_index(
        "ix_wal_segments_source_timeline_segno",
        "wal_segments",
        ["source_id", "timeline", "segno"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_wal_segments_source_timeline_segno", table_name="wal_segments")
    op.drop_table("wal_segments")
    op.drop_table("wal_archives")
