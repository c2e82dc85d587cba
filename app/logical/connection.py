"""A PostgreSQL DSN as the logical export's programs are given it: a conninfo without any password (for
command lines, messages and the audit trail) and an environment holding the password, if there is one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.errors import ConfigurationError

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT = 30


@dataclass(frozen=True)
class Connection:
    """Where to connect. `conninfo` is safe to show; `password` is never shown."""

    conninfo: str
    database: str | None
    password: str | None = field(default=None, repr=False)

    def with_database(self, database: str) -> Connection:
        from psycopg import conninfo

        return Connection(conninfo.make_conninfo(self.conninfo, dbname=database), database, self.password)

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        """`base` (the process environment) plus PGPASSWORD when the DSN carried a password, and a
        connect timeout unless one is set."""
        env = dict(base)
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        env.setdefault("PGCONNECT_TIMEOUT", str(CONNECT_TIMEOUT))
        return env

    def connect(self, application_name: str) -> psycopg.Connection[Any]:
        """A psycopg connection (autocommit); psycopg.Error propagates for the caller to word."""
        import psycopg

        kwargs: dict[str, Any] = {"password": self.password} if self.password is not None else {}
        return psycopg.connect(
            self.conninfo,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            application_name=application_name,
            **kwargs,
        )


def connection_for(dsn: str, database: str | None = None) -> Connection:
    """Split `dsn` (URL or key=value) into a password-free conninfo and the password; `database`
    replaces its dbname. No message repeats the DSN: it may hold a password."""
    from psycopg import Error, conninfo

    try:
        params = conninfo.conninfo_to_dict(dsn)
    except Error:  # psycopg's message may quote part of the DSN
        raise ConfigurationError(
            "the PostgreSQL DSN is malformed",
            hint="use postgresql://USER@HOST:PORT/DB or 'host=HOST port=PORT user=USER dbname=DB'",
        ) from None
    password = params.pop("password", None)
    if database is not None:
        params["dbname"] = database
    kept = {key: str(value) for key, value in params.items() if "password" not in key.lower()}
    name = kept.get("dbname")
    return Connection(conninfo.make_conninfo(**kept), name, None if password is None else str(password))
