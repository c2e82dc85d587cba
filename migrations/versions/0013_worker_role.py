"""The workers' catalog role on PostgreSQL (docs/AUDIT.md section 4): `equisplit_worker`, NOLOGIN, with
the rights workers need on every table and only SELECT and INSERT on the audit trail. Created when the
migrating user may create roles (a superuser, or CREATEROLE), and granted to that user so its
processes can `SET ROLE` to it; otherwise a database administrator creates it (the docs give the SQL).
Tables added by later migrations get the same rights through default privileges.

Revision ID: 0013_worker_role
Revises: 0012_audit_lookups
Create Date: 2026-12-05 06:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013_worker_role"
down_revision: str | Sequence[str] | None = "0012_audit_lookups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "equisplit_worker"
GRANTS = (
    f"GRANT USAGE ON SCHEMA public TO {ROLE}",
    f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {ROLE}",
    f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {ROLE}",
    f"REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM {ROLE}",
    f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {ROLE}",
    f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {ROLE}",
)
# One block, the same online and in offline SQL: nothing when the role is missing and the user may not
# create it; a concurrent migration of another catalog on the server creating it first is no error.
UPGRADE = (
    """
DO $$
DECLARE
    su boolean;
    may boolean;
BEGIN
    SELECT rolsuper, rolsuper OR rolcreaterole INTO su, may FROM pg_roles WHERE rolname = current_user;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
        IF NOT may THEN
            RAISE NOTICE 'role {role} not created: % may not create roles (docs/AUDIT.md section 4)', current_user;
            RETURN;
        END IF;
        BEGIN
            CREATE ROLE {role} NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
{grants}
    IF may AND NOT su AND NOT pg_has_role(current_user, '{role}', 'MEMBER') THEN
        EXECUTE format('GRANT {role} TO %I', current_user);
    END IF;
END
$$
""".format(role=ROLE, grants="\n".join(f"    EXECUTE '{g}';" for g in GRANTS))
)


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(UPGRADE)


DOWNGRADE = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
        EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM {ROLE}';
        EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {ROLE}';
        EXECUTE 'REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {ROLE}';
        EXECUTE 'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {ROLE}';
        EXECUTE 'REVOKE USAGE ON SCHEMA public FROM {ROLE}';
    END IF;
END
$$
"""


def downgrade() -> None:
    # The role is the server's, shared by every catalog on it: only this database's rights are taken back.
    if op.get_context().dialect.name == "postgresql":
        op.execute(DOWNGRADE)
