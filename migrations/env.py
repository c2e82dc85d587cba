"""Alembic environment of the catalog: migrates the engine the caller passes in.

`app.catalog.db.alembic_config(engine)` puts the engine in `config.attributes["engine"]`; without it
the URL comes from the `sqlalchemy.url` option or DATABASE_URL. Logging is left to the application.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url

from app.catalog.db import ROLE_INFO, make_engine, normalise_url
from app.catalog.models import Base
from app.errors import ConfigurationError

config = context.config
target_metadata = Base.metadata


def _configure_options(dialect_name: str) -> dict[str, object]:
    return {
        "target_metadata": target_metadata,
        "compare_type": True,
        # SQLite cannot ALTER most things: later migrations rewrite tables in batch mode.
        "render_as_batch": dialect_name == "sqlite",
    }


def _database_url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL")
    if not url:
        raise ConfigurationError(
            "no catalog database to migrate",
            hint="set DATABASE_URL or pass an engine through app.catalog.db.alembic_config",
        )
    return normalise_url(url)


def run_migrations_offline() -> None:
    """Emit the migration as SQL (`alembic upgrade --sql`) without connecting."""
    engine = config.attributes.get("engine")
    url = engine.url if isinstance(engine, Engine) else make_url(_database_url())
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_configure_options(url.get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    # A connection that took the workers' catalog role migrates as the session user (the owner), and
    # takes the role again after (app.catalog.db.ROLE_INFO).
    role = connection.info.get(ROLE_INFO)
    if role:
        connection.exec_driver_sql("RESET ROLE")
        connection.commit()
    try:
        context.configure(connection=connection, **_configure_options(connection.dialect.name))
        with context.begin_transaction():
            context.run_migrations()
    finally:
        if role:
            connection.rollback()
            connection.exec_driver_sql(f'SET ROLE "{role}"')
            connection.commit()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run_on(connection)
        return
    engine = config.attributes.get("engine")
    if isinstance(engine, Engine):
        with engine.connect() as conn:
            _run_on(conn)
        return
    owned = make_engine(_database_url())
    try:
        with owned.connect() as conn:
            _run_on(conn)
    finally:
        owned.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
