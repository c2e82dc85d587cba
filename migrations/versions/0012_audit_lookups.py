"""An index of audit entries by action and object: a process finds the last configuration its kind
recorded (docs/AUDIT.md section 6) without reading the trail.

Revision ID: 0012_audit_lookups
Revises: 0011_region_retention
Create Date: 2026-12-05 06:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012_audit_lookups"
down_revision: str | Sequence[str] | None = "0011_region_retention"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_audit_log_action_object", "audit_log", ["action", "object"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_action_object", table_name="audit_log")
