"""The PostgreSQL server a logical export reads or an import writes: which database, which version,
and whether a database already holds user relations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.errors import RestoreTargetError, SourceError, first_line
from app.logical.connection import Connection

if TYPE_CHECKING:
    import psycopg

#: Relation kinds an import refuses to write next to: table, partitioned table, view, materialized
#: view, sequence, foreign table.
USER_RELKINDS = ("r", "p", "v", "m", "S", "f")
_USER_RELATIONS = (
    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind = ANY(%s) AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'"
    " ORDER BY 1, 2"
)


@dataclass(frozen=True)
class ServerInfo:
    database: str
    version: str  # e.g. "15.20"
    version_num: int  # e.g. 150020

    @property
    def major(self) -> int:
        return self.version_num // 10000


def source_server(conn: Connection, source: str) -> ServerInfo:
    """The database a source's export reads, and its server's version; SourceError naming the
    database if it cannot be reached (or does not exist)."""
    import psycopg

    name = conn.database or "(the DSN's default)"
    try:
        with conn.connect("equisplit-dr export") as pg:
            return _info(pg)
    except psycopg.Error as exc:
        detail = first_line(exc)
        if "does not exist" in detail and f'database "{conn.database}"' in detail:
            raise SourceError(
                f"database {conn.database!r} does not exist on the PostgreSQL server of source {source}",
                detail=detail,
                hint="check the name with `psql -l`, or leave --database out to export the DSN's database",
            ) from None
        raise SourceError(
            f"cannot connect to database {name} of source {source}",
            detail=detail,
            hint="check the source's DSN (`source list`), that the server is up, and the password in "
            "~/.pgpass or PGPASSWORD",
        ) from None


def empty_target(conn: Connection) -> ServerInfo:
    """The target of an import, if it holds no user relation; RestoreTargetError otherwise (nothing is
    written either way)."""
    import psycopg

    name = conn.database or "(the DSN's default)"
    try:
        with conn.connect("equisplit-dr import") as pg:
            info = _info(pg)
            found = pg.execute(_USER_RELATIONS, [list(USER_RELKINDS)]).fetchall()
    except psycopg.Error as exc:
        raise RestoreTargetError(
            f"cannot connect to the target database {name}",
            detail=first_line(exc),
            hint="check the target DSN, that the database exists (CREATE DATABASE …) and the password "
            "(~/.pgpass or PGPASSWORD)",
        ) from None
    if found:
        first = f"{found[0][0]}.{found[0][1]}"
        raise RestoreTargetError(
            f"target database {info.database} is not empty: it holds {len(found)} relation(s), "
            f"first {first}; nothing was written",
            hint=f"import into a new, empty database (CREATE DATABASE {info.database}_import, or "
            "`createdb NAME`); an import never writes over existing data",
        )
    return info


def _info(pg: psycopg.Connection[Any]) -> ServerInfo:
    row = pg.execute(
        "SELECT current_database(), current_setting('server_version'), "
        "current_setting('server_version_num')::int"
    ).fetchone()
    assert row is not None
    return ServerInfo(str(row[0]), str(row[1]).split()[0], int(row[2]))
