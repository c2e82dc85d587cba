"""A fresh, empty PostgreSQL database per test, on the server at EQUISPLIT_TEST_PG_URL.

Use it from a conftest: `from tests.support.pg import fresh_pg_url  # noqa: F401`, and mark the tests
`@pytest.mark.postgres`. An unreachable server fails the test with a hint; it is never skipped.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from app.catalog.db import normalise_url

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def server_url() -> URL:
    """The URL of the test server's maintenance database (EQUISPLIT_TEST_PG_URL or the default)."""
    return make_url(normalise_url(os.environ.get("EQUISPLIT_TEST_PG_URL", DEFAULT_PG_URL)))


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """Yield the URL of a new empty database with a random name; drop it after the test."""
    server = server_url()
    name = f"eqdr_test_{secrets.token_hex(6)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL at {server.render_as_string(hide_password=True)} cannot be reached "
            f"({exc.orig.__class__.__name__}): set EQUISPLIT_TEST_PG_URL, or deselect with -m 'not postgres'",
            pytrace=False,
        )
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            # FORCE ends connections a test left open (PostgreSQL 13+).
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
