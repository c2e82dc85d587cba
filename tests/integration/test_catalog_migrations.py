"""The Alembic migrations build exactly the schema of app.catalog.models, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from app.catalog.db import SCHEMA_REVISION, alembic_config, make_engine, migrate, require_migrated
from app.catalog.models import Base
from app.errors import CatalogError

MODEL_TABLES = set(Base.metadata.tables)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    else:
        url = request.getfixturevalue("fresh_pg_url")
    catalog = make_engine(url)
    yield catalog
    catalog.dispose()


def table_names(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def schema_differences(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def test_upgrade_head_creates_every_model_table(engine: Engine) -> None:
    migrate(engine)

    assert table_names(engine) == MODEL_TABLES | {"alembic_version"}
    assert current_revision(engine) == head_revision(engine)


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    migrate(engine)

    assert schema_differences(engine) == []


def test_the_comparison_notices_a_schema_that_drifted(engine: Engine) -> None:
    """A control for the test above: the comparison is not vacuous."""
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_chunks_pack"))

    assert [diff[0] for diff in schema_differences(engine)] == ["add_index"]


def test_downgrade_to_base_drops_everything_and_upgrade_rebuilds(engine: Engine) -> None:
    migrate(engine)

    command.downgrade(alembic_config(engine), "base")

    assert table_names(engine) == {"alembic_version"}
    assert current_revision(engine) is None
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            leftovers = conn.execute(
                text(
                    "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
                    " WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd')"
                    " UNION ALL SELECT c.relname FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = 'public' AND c.relkind = 'S'"
                )
            ).all()
        assert leftovers == []

    migrate(engine)

    assert table_names(engine) == MODEL_TABLES | {"alembic_version"}
    assert schema_differences(engine) == []


def test_migrate_twice_is_harmless(engine: Engine) -> None:
    migrate(engine)
    migrate(engine)

    assert current_revision(engine) == head_revision(engine)
    assert schema_differences(engine) == []


def test_require_migrated_refuses_an_empty_catalog_then_accepts_a_migrated_one(engine: Engine) -> None:
    with pytest.raises(CatalogError, match="no schema yet"):
        require_migrated(engine)

    migrate(engine)

    require_migrated(engine)


def test_offline_mode_emits_the_schema_as_sql(engine: Engine) -> None:
    config = alembic_config(engine)
    config.output_buffer = io.StringIO()

    command.upgrade(config, "head", sql=True)

    sql = config.output_buffer.getvalue()
    for table in MODEL_TABLES:
        assert f"CREATE TABLE {table} " in sql
    assert table_names(engine) == set()


def test_tiers_migration_keeps_the_chunk_index_and_downgrades_to_one_copy(engine: Engine) -> None:
    """0014_tiers: every indexed chunk becomes a standard copy; a cold copy of the same id can then be
    indexed beside it; a downgrade keeps the standard copy (docs/ARCHIVE.md)."""
    config = alembic_config(engine)
    command.upgrade(config, "0013_worker_role")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO packs (id, size, chunk_count, created_at) VALUES ('p1', 10, 1, :at), "
                "('p2', 10, 1, :at)"
            ),
            {"at": "2026-12-05 00:00:00"},
        )
        conn.execute(text("INSERT INTO chunks VALUES ('c1', 'p1', 0, 10, 20)"))

    command.upgrade(config, "head")
    with engine.begin() as conn:
        assert conn.execute(text("SELECT id, tier FROM chunks")).all() == [("c1", "standard")]
        assert conn.execute(text("SELECT DISTINCT tier FROM packs")).all() == [("standard",)]
        conn.execute(text("UPDATE packs SET tier = 'cold' WHERE id = 'p2'"))
        conn.execute(text("INSERT INTO chunks VALUES ('c1', 'p2', 0, 10, 20, 'cold')"))
    assert schema_differences(engine) == []

    command.downgrade(config, "0013_worker_role")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, pack_id FROM chunks")).all() == [("c1", "p1")]


def test_the_schema_revision_the_code_expects_is_alembics_head(engine: Engine) -> None:
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    assert head == SCHEMA_REVISION


def test_a_catalog_of_an_older_or_newer_schema_is_refused_naming_the_revisions(engine: Engine) -> None:
    migrate(engine)
    previous = ScriptDirectory.from_config(alembic_config(engine)).get_revision(SCHEMA_REVISION).down_revision
    command.downgrade(alembic_config(engine), str(previous))
    with pytest.raises(CatalogError) as older:
        require_migrated(engine)
    assert f"revision {previous}, older than" in older.value.message and "init" in (older.value.hint or "")

    migrate(engine)
    require_migrated(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(CatalogError) as newer:
        require_migrated(engine)
    assert "9999_future, newer than" in newer.value.message and "upgrade equisplit-dr" in (newer.value.hint or "")
