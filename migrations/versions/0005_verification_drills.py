"""Verification and drills: runs, per-backup and per-pack results, a backup's verified/damaged times,
and restore drills with their measured RTO.

Revision ID: 0005_verification_drills
Revises: 0004_postgres
Create Date: 2026-12-05 03:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_verification_drills"
down_revision: str | Sequence[str] | None = "0004_postgres"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("backups") as batch:
        batch.add_column(sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("damaged_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "verifications",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.JSON(), nullable=False),
        sa.Column("backups", sa.Integer(), nullable=False),
        sa.Column("packs_checked", sa.Integer(), nullable=False),
        sa.Column("packs_read", sa.Integer(), nullable=False),
        sa.Column("chunks_read", sa.BigInteger(), nullable=False),
        sa.Column("bytes_read", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_table(
        "backup_verifications",
        sa.Column("verification_id", sa.String(length=40), primary_key=True),
        sa.Column("backup_id", sa.String(length=40), primary_key=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("packs", sa.Integer(), nullable=False),
        sa.Column("packs_read", sa.Integer(), nullable=False),
        sa.Column("chunks", sa.BigInteger(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
    )
    op.create_index("ix_backup_verifications_backup", "backup_verifications", ["backup_id", "checked_at"])
    op.create_table(
        "pack_verifications",
        sa.Column("pack_id", sa.String(length=64), primary_key=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("verification_id", sa.String(length=40), nullable=False),
        sa.Column("bytes_read", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
    )
    op.create_table(
        "drills",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("source_id", sa.Integer(), sa.ForeignKey("sources.id"), nullable=False),
        sa.Column("backup_id", sa.String(length=40), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rto_seconds", sa.Float(), nullable=True),
        sa.Column("rto_target_seconds", sa.Integer(), nullable=False),
        sa.Column("point_reached", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rpo_seconds", sa.Float(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_drills_source_started", "drills", ["source_id", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_drills_source_started", table_name="drills")
    op.drop_table("drills")
    op.drop_table("pack_verifications")
    op.drop_index("ix_backup_verifications_backup", table_name="backup_verifications")
    op.drop_table("backup_verifications")
    op.drop_table("verifications")
    with op.batch_alter_table("backups") as batch:
        batch.drop_column("damaged_at")
        batch.drop_column("verified_at")
