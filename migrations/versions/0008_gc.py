"""Garbage collection: packs whose chunks left the index, waiting for their grace period.

Revision ID: 0008_gc
Revises: 0007_replication
Create Date: 2026-12-05 04:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_gc"
down_revision: str | Sequence[str] | None = "0007_replication"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gc_candidates",
        sa.Column("pack_id", sa.String(length=64), primary_key=True),
        sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("running", sa.JSON(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("gc_candidates")
