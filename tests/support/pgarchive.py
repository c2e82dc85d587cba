"""An archive home (catalog, repository, key file) that a PostgreSQL cluster's archive_command writes
into, as the `postgres` user; the tests, as root, read and damage it (tests/support/pgcluster.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.catalog.db import migrate, transaction
from app.catalog.models import WalArchive, WalSegment
from app.catalog.sources import add_postgres_source
from app.context import Context
from app.repo.format import Kind
from app.repo.keys import MasterKey
from app.repo.repository import Repository
from app.settings import load_settings
from app.wal import names, segment
from tests.support.pgcluster import PgCluster, chown_to_postgres

SOURCE = "db1"


class Archive:
    """An archive home (catalog, repository, key file) that a cluster's archive_command writes into."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.home = base / "home"
        self.broker = socket.socket()  # a broker that never answers: push must not even connect to it
        self.broker.bind(("127.0.0.1", 0))
        self.broker.listen(8)
        self.broker.setblocking(False)
        self.env = {
            "EQUISPLIT_DR_HOME": str(self.home),
            "EQUISPLIT_DR_SOURCE": SOURCE,
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{self.broker.getsockname()[1]}/0",
        }
        self.ctx = Context(
            load_settings(
                equisplit_dr_home=self.home,
                database_url=None,
                backup_storage_url=None,
                backup_encryption_key=None,
                backup_encryption_key_file=None,
            )
        )

    def cli(self, *args: str, ok: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "DATABASE_URL", "EQUISPLIT"))
        }
        env.update(self.env, PYTHONPATH=str(Path(__file__).resolve().parents[2]), COLUMNS="200")
        proc = subprocess.run(
            [sys.executable, "-m", "app.cli.entry", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd,
        )
        if ok:
            assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def broker_was_contacted(self) -> bool:
        try:
            connection, _ = self.broker.accept()
        except BlockingIOError:
            return False
        connection.close()
        return True

    def object_path(self, name: str) -> Path:
        return self.home / "repo" / Kind.WAL / names.object_name(SOURCE, name)

    def rows(self) -> list[WalSegment]:
        with self.ctx.sessions() as session:
            return list(session.query(WalSegment).order_by(WalSegment.name))

    def row(self, name: str) -> WalSegment | None:
        with self.ctx.sessions() as session:
            return session.get(WalSegment, (1, name))

    def archive_row(self) -> WalArchive | None:
        with self.ctx.sessions() as session:
            return session.get(WalArchive, 1)

    def stored(self, name: str) -> bytes:
        return segment.read(self.ctx.repository, SOURCE, name)[1]

    def close(self) -> None:
        self.ctx.close()
        self.broker.close()


@pytest.fixture
def archive() -> Iterator[Archive]:
    """A fresh archive home with source `db1`, made in-process (the CLI's `init` and `source add` are
    tested once, below), then handed to the `postgres` user."""
    base = Path(tempfile.mkdtemp(prefix="eqdr-archive-", dir="/tmp"))
    made = Archive(base)
    try:
        base.chmod(0o755)
        MasterKey.generate().write_file(made.ctx.settings.default_key_file)
        migrate(made.ctx.engine)
        Repository.init(made.ctx.storage, made.ctx.master_key())
        with transaction(made.ctx.sessions) as session:
            add_postgres_source(session, SOURCE, "host=127.0.0.1 port=5432 user=postgres", None)
        chown_to_postgres(made.home)
        yield made
    finally:
        made.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def archived_cluster(archive: Archive, pg_template: Path) -> Iterator[PgCluster]:
    """A throwaway PostgreSQL cluster archiving into `archive`, registered as its source `db1`."""
    with PgCluster.create(pg_template, archive.env) as started:
        point_source_at(archive, started.port)
        yield started


def point_source_at(archive: Archive, port: int) -> None:
    """Give source `db1` the DSN of the cluster listening on `port` (the fixture registers a dummy one)."""
    from app.catalog.sources import get_source

    with transaction(archive.ctx.sessions) as session:
        get_source(session, SOURCE).options = {
            "dsn": f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=10"
        }


def write_fetch_script(path: Path) -> str:
    """A restore_command script for a recovered server (run as `postgres` with the environment
    `dr recover --start` gives it): a Python that user can run, then `wal fetch`. Returns the
    restore_command."""
    from tests.support.pgcluster import python_for_postgres

    python = python_for_postgres()
    calls = Path(f"{path}.calls")
    calls.touch()
    chown_to_postgres(calls)
    path.write_text(
        "#!/bin/sh\n"
        f'echo "$$ $1 $2" >> "{path}.calls"\n'
        f"export PYTHONPATH={python.pythonpath}\n"
        f'exec {python.executable} -m app.cli.entry wal fetch "$1" "$2"\n'
    )
    path.chmod(0o755)
    return f"{path} %f %p"
