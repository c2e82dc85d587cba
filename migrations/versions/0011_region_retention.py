"""Per-region retention (docs/RETENTION.md section 5): a backup's fate in a secondary region where it
differs from the primary's.

Revision ID: 0011_region_retention
Revises: 0010_audit
Create Date: 2026-12-05 06:15:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_region_retention"
down_revision: str | Sequence[str] | None = "0010_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "backup_regions",
        sa.Column("backup_id", sa.String(length=40), primary_key=True),
        sa.Column("region", sa.String(length=64), primary_key=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("prior_state", sa.String(length=16), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
    )
    op.create_index("ix_backup_regions_region_state", "backup_regions", ["region", "state"])


def downgrade() -> None:
    op.drop_index("ix_backup_regions_region_state", table_name="backup_regions")
    op.drop_table("backup_regions")
