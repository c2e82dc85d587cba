"""Backup sources registered in the catalog."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import clock
from app.catalog.models import Source
from app.errors import SourceError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


_QUEUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def add_source(
    session: Session, name: str, *, path: Path, kind: str = "files", queue: str | None = None
) -> Source:
    """Register a file-tree source; the path must be an existing directory. `queue` names the queue
    its units go to (default `chunks`): only workers started with `-Q QUEUE` can read its files."""
    if queue is not None and not _QUEUE.match(queue):
        raise SourceError(
            f"queue name {queue!r} is not allowed", hint="use letters, digits, '.', '_' and '-'"
        )
    if not _NAME.match(name):
        raise SourceError(
            f"source name {name!r} is not allowed",
            hint="use letters, digits, '.', '_' and '-', starting with a letter or digit",
        )
    if session.scalar(select(Source).where(Source.name == name)) is not None:
        raise SourceError(f"source {name!r} already exists", hint="pick another name, or use it as it is")
    resolved = path.expanduser().resolve()
    if not resolved.is_dir():
        raise SourceError(f"source path {resolved} is not a directory", hint="give the directory to back up")
    options = {"queue": queue} if queue else {}
    source = Source(name=name, kind=kind, path=str(resolved), options=options, created_at=clock.now())
    session.add(source)
    session.flush()
    return source


def get_source(session: Session, name: str) -> Source:
    source = session.scalar(select(Source).where(Source.name == name))
    if source is None:
        raise SourceError(
            f"no source named {name!r}",
            hint="list them with `equisplit-dr source list`, add with `source add`",
        )
    return source


def list_sources(session: Session) -> list[Source]:
    return list(session.scalars(select(Source).order_by(Source.name)))


def add_postgres_source(session: Session, name: str, dsn: str, pgdata: Path | None = None) -> Source:
    """Register a PostgreSQL cluster as a source; its DSN is stored with any password removed.

    `pgdata`, when given, must be an existing directory (the cluster's data directory on this host).
    No message repeats the DSN: it may hold a password.
    """
    if not _NAME.match(name) or ".." in name:
        raise SourceError(
            f"source name {name!r} is not allowed",
            hint="use letters, digits, '.', '_' and '-', starting with a letter or digit, without '..'",
        )
    if session.scalar(select(Source).where(Source.name == name)) is not None:
        raise SourceError(f"source {name!r} already exists", hint="pick another name, or use it as it is")
    path = None
    if pgdata is not None:
        resolved = pgdata.expanduser().resolve()
        if not resolved.is_dir():
            raise SourceError(
                f"PostgreSQL data directory {resolved} is not a directory",
                hint="give the cluster's data directory (SHOW data_directory), or leave --pgdata out",
            )
        path = str(resolved)
    source = Source(
        name=name,
        kind="postgres",
        path=path,
        options={"dsn": dsn_without_password(dsn)},
        created_at=clock.now(),
    )
    session.add(source)
    session.flush()
    return source


def dsn_without_password(dsn: str) -> str:
    """`dsn` (URL or key=value form) as key=value conninfo without any password-bearing parameter."""
    from psycopg import Error, conninfo

    try:
        params = conninfo.conninfo_to_dict(dsn)
    except Error:  # psycopg's message may quote part of the DSN, so it is not repeated
        raise SourceError(
            "the PostgreSQL DSN is malformed",
            hint="use postgresql://USER@HOST:PORT/DB or 'host=HOST port=PORT user=USER dbname=DB'; "
            "keep passwords in ~/.pgpass or PGPASSWORD, not in the DSN",
        ) from None
    kept = {key: value for key, value in params.items() if "password" not in key.lower()}
    if not kept:
        raise SourceError("the PostgreSQL DSN names no connection parameter", hint="give at least a host")
    return conninfo.make_conninfo(**{key: str(value) for key, value in kept.items()})
