"""Fixtures for the WAL unit tests: an initialised repository and catalog on SQLite and a local
directory, a PostgreSQL source, and segments whose first page carries a real long page header."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.catalog.db import migrate, transaction
from app.catalog.sources import add_postgres_source, add_source
from app.context import Context
from app.repo.repository import Repository
from app.settings import load_settings
from app.wal import names, segment

SOURCE = "db-1"  # a '-' in the name: object names split at their last '-'
SYSID = 7_312_345_678_901_234_567
SEGMENT_SIZE = 1 << 20


def make_segment(
    segno: int,
    *,
    size: int = SEGMENT_SIZE,
    sysid: int = SYSID,
    address: int | None = None,
    fill: bytes | None = None,
) -> bytes:
    """A segment-like file: a long page header (as PostgreSQL 15 writes it) then compressible bytes."""
    header = segment.LONG_PAGE_HEADER.pack(
        0xD110, segment.XLP_LONG_HEADER, 1, segno * size if address is None else address, 0, sysid, size, 8192
    )
    body = fill if fill is not None else (f"segment {segno} ".encode() * (size // 8))
    return (header + body)[:size].ljust(size, b"\0")


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[Context]:
    settings = load_settings(
        equisplit_dr_home=tmp_path / "home",
        database_url=None,
        backup_storage_url=None,
        backup_encryption_key=secrets.token_hex(32),
        backup_encryption_key_file=None,
        wal_push_lookahead=8,
        wal_push_concurrency=4,
    )
    context = Context(settings)
    migrate(context.engine)
    Repository.init(context.storage, context.master_key())
    (tmp_path / "tree").mkdir()
    with transaction(context.sessions) as session:
        add_postgres_source(session, SOURCE, "host=127.0.0.1 user=postgres", None)
        add_source(session, "files", path=tmp_path / "tree")
    yield context
    context.close()


@pytest.fixture
def pg_wal(tmp_path: Path) -> Path:
    directory = tmp_path / "pgdata" / "pg_wal"
    (directory / "archive_status").mkdir(parents=True)
    return directory


WriteSegment = Callable[..., Path]


@pytest.fixture
def write_segment(pg_wal: Path) -> WriteSegment:
    """Write segment `segno` of timeline 1 into pg_wal (optionally marked `.ready`); its path."""

    def write(segno: int, data: bytes | None = None, *, ready: bool = False, timeline: int = 1) -> Path:
        name = names.segment_name(timeline, segno, SEGMENT_SIZE)
        path = pg_wal / name
        path.write_bytes(make_segment(segno) if data is None else data)
        if ready:
            (pg_wal / "archive_status" / f"{name}.ready").touch()
        return path

    return write
