"""Replication: each object's copy per secondary region, each region's discovery mark and last pass, and
the indexes discovery reads new packs and WAL through (docs/REPLICATION.md).

Revision ID: 0007_replication
Revises: 0006_retention
Create Date: 2026-12-05 04:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_replication"
down_revision: str | Sequence[str] | None = "0006_retention"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "replica_objects",
        sa.Column("region", sa.String(length=64), primary_key=True),
        sa.Column("kind", sa.String(length=16), primary_key=True),
        sa.Column("name", sa.String(length=128), primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("source_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("copied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_replica_objects_region_state", "replica_objects", ["region", "state", "source_at"])
    op.create_table(
        "replication_regions",
        sa.Column("region", sa.String(length=64), primary_key=True),
        sa.Column("discovered_through", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_pass_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
    )
    op.create_index("ix_packs_created", "packs", ["created_at"])
    op.create_index("ix_wal_segments_archived", "wal_segments", ["archived_at"])


def downgrade() -> None:
    op.drop_index("ix_wal_segments_archived", table_name="wal_segments")
    op.drop_index("ix_packs_created", table_name="packs")
    op.drop_table("replication_regions")
    op.drop_index("ix_replica_objects_region_state", table_name="replica_objects")
    op.drop_table("replica_objects")
