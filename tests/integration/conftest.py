from tests.support.pg import fresh_pg_url  # noqa: F401
