"""Alembic environment and versions of the catalog schema."""
