"""PostgreSQL base backups: the WAL positions, timeline and end time of each backup.

Revision ID: 0004_postgres
Revises: 0003_cluster
Create Date: 2026-11-27 04:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_postgres"
down_revision: str | Sequence[str] | None = "0003_cluster"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("backups") as batch:
        batch.add_column(sa.Column("pg_start_lsn", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("pg_stop_lsn", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("pg_timeline", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("pg_start_wal", sa.String(length=24), nullable=True))
        batch.add_column(sa.Column("pg_stop_wal", sa.String(length=24), nullable=True))
        batch.add_column(sa.Column("pg_started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("pg_stopped_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backups") as batch:
        for column in (
            "pg_stopped_at",
            "pg_started_at",
            "pg_stop_wal",
            "pg_start_wal",
            "pg_timeline",
            "pg_stop_lsn",
            "pg_start_lsn",
        ):
            batch.drop_column(column)
