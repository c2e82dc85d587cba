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


def add_source(session: Session, name: str, *, path: Path, kind: str = "files") -> Source:
    """Register a file-tree source; the path must be an existing directory."""
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
    source = Source(name=name, kind=kind, path=str(resolved), options={}, created_at=clock.now())
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
