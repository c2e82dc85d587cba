"""Tiers (docs/ARCHIVE.md): each pack and each chunk copy is `standard` or `cold`; a chunk may be
indexed once per tier, so the chunk index's key becomes (id, tier). Every existing row is standard.

Revision ID: 0014_tiers
Revises: 0013_worker_role
Create Date: 2026-12-05 06:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_tiers"
down_revision: str | Sequence[str] | None = "0013_worker_role"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _tier() -> sa.Column[str]:
    return sa.Column("tier", sa.String(length=16), nullable=False, server_default="standard")


def _rekey_chunks(key: list[str]) -> None:
    """Give `chunks` the primary key `key` (with the `tier` column, which the caller adds or drops)."""
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("chunks_pkey", "chunks", type_="primary")
        op.create_primary_key("chunks_pkey", "chunks", key)
        return
    # SQLite cannot alter a primary key, and a batch copy warns about it: copy the table by hand.
    columns = ["id", "pack_id", "offset", "length", "raw_length"]  # a new tier column takes its default
    op.create_table(
        "chunks_rekeyed",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("pack_id", sa.String(length=64), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("raw_length", sa.Integer(), nullable=False),
        *([_tier()] if "tier" in key else []),
        sa.ForeignKeyConstraint(["pack_id"], ["packs.id"], name="chunks_pack_id_fkey"),
        sa.PrimaryKeyConstraint(*key, name="chunks_pkey"),
    )
    listed = ", ".join(f'"{c}"' for c in columns)
    op.execute(f"INSERT INTO chunks_rekeyed ({listed}) SELECT {listed} FROM chunks")
    op.drop_index("ix_chunks_pack", table_name="chunks")
    op.drop_table("chunks")
    op.rename_table("chunks_rekeyed", "chunks")
    op.create_index("ix_chunks_pack", "chunks", ["pack_id"], unique=False)


def upgrade() -> None:
    op.add_column("packs", _tier())
    if op.get_bind().dialect.name != "sqlite":
        op.add_column("chunks", _tier())
    _rekey_chunks(["id", "tier"])


def downgrade() -> None:
    # A chunk held in both tiers keeps its standard copy: the key is the id alone again.
    op.execute("DELETE FROM chunks WHERE tier <> 'standard'")
    _rekey_chunks(["id"])
    if op.get_bind().dialect.name != "sqlite":
        op.drop_column("chunks", "tier")
    # A batch copy of `packs` would drop the table that `chunks` references; SQLite >= 3.35 drops a column.
    op.execute("ALTER TABLE packs DROP COLUMN tier")
