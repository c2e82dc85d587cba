"""Engines and sessions for the catalog, on SQLite (embedded default) or PostgreSQL (psycopg 3)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError
from sqlalchemy.orm import Session, sessionmaker

from app.catalog import sqlite_file
from app.errors import CatalogError, ConfigurationError

if TYPE_CHECKING:
    from app.settings import Settings


def normalise_url(url: str) -> str:
    """Use psycopg 3 for a bare `postgresql://` URL."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


#: How much of an SQLite catalog is read through a memory map (address space, not memory).
SQLITE_MMAP_BYTES = 256 << 20


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Pages read through a memory map, not a pread each: a finalize's pack check looks up every chunk
    # a backup names (40,000 for the 1 GB bench tree), beyond the 2 MiB page cache (0.16 -> 0.11 CPU s)
    cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
    cursor.close()


#: Where a connection's record notes the role it took (migrations step out of it and back).
ROLE_INFO = "equisplit_catalog_role"


def catalog_role(settings: Settings, process: str | None) -> tuple[str | None, bool]:
    """The role a process's catalog connections take (docs/AUDIT.md section 4) and whether failing to
    take it is an error: workers take it when they can; with `all`, every process must."""
    role, mode = settings.backup_catalog_worker_role, settings.backup_catalog_use_worker_role
    if not role or mode == "never":
        return None, False
    if mode == "all":
        return role, True
    return (role, False) if process == "worker" else (None, False)


def _take_role(role: str, required: bool) -> Any:
    """A `connect` listener: `SET ROLE` on each new connection, committed so the pool's rollbacks keep
    it. Not required: only when the role exists and the session user may take it."""

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if not required:
                cursor.execute(
                    "SELECT pg_has_role(session_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = %s", (role,)
                )
                row = cursor.fetchone()
                if not row or not row[0]:
                    dbapi_connection.rollback()
                    return
            cursor.execute(f'SET ROLE "{role}"')  # the name is checked by the setting's pattern
            dbapi_connection.commit()
            record.info[ROLE_INFO] = role
        except Exception as exc:
            dbapi_connection.rollback()
            raise ConfigurationError(
                f"the catalog user cannot take role {role} (BACKUP_CATALOG_WORKER_ROLE): "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                hint="run `equisplit-dr init` as the catalog's owner (its migration creates the role), grant "
                "the role to the user of DATABASE_URL, or set BACKUP_CATALOG_USE_WORKER_ROLE=workers",
            ) from None
        finally:
            cursor.close()

    return on_connect


def make_engine(url: str, *, role: str | None = None, role_required: bool = False) -> Engine:
    """An engine for the catalog URL; a malformed URL raises ConfigurationError naming DATABASE_URL.
    With `role` (PostgreSQL only), each connection takes that role (see `catalog_role`)."""
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigurationError(
            "DATABASE_URL is not a database URL",
            hint="use sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB",
        ) from None
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _on_sqlite_connect)
        path = sqlite_path(engine)
        if path is not None:
            _make_directory(path)
            event.listen(engine, "handle_error", _sqlite_error_explainer(path))
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise ConfigurationError(
            f"DATABASE_URL names an unsupported database ({parsed.get_backend_name()})",
            hint="use SQLite or PostgreSQL",
        )
    engine = create_engine(parsed, pool_pre_ping=True, pool_size=8, max_overflow=8)
    if role:
        event.listen(engine, "connect", _take_role(role, role_required))
    return engine


def sqlite_path(engine: Engine) -> Path | None:
    """The file of an SQLite catalog; None for PostgreSQL or an in-memory database."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).absolute()


def _make_directory(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise sqlite_file.access_problem(path) or CatalogError(
            f"permission denied: OS user {sqlite_file.os_user()} cannot create the catalog directory "
            f"{path.parent}",
            hint="set EQUISPLIT_DR_HOME or DATABASE_URL to a directory that user owns",
        ) from None


def _sqlite_error_explainer(path: Path) -> Any:
    """A `handle_error` listener: a damaged file or one this OS user cannot write becomes a
    CatalogError naming the file and what to do, wherever in the code the statement ran."""

    def explain(context: ExceptionContext) -> None:
        error = sqlite_file.explain(context.original_exception, path)
        if error is not None:
            raise error from None

    return explain


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on error."""
    with factory() as session, session.begin():
        yield session


def migrate(engine: Engine, revision: str = "head", *, check: bool = True) -> None:
    """Bring the catalog schema to `revision` with Alembic; CatalogError for a damaged SQLite file
    (`check=False`: the caller has just checked it)."""
    from alembic import command

    path = sqlite_path(engine)
    if check and path is not None and (damage := sqlite_file.check(path)) is not None:
        raise sqlite_file.damaged(path, damage)

    command.upgrade(alembic_config(engine), revision)


def alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    import migrations

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["engine"] = engine
    return config


#: The Alembic revision this build's models match (migrations/versions; a test holds it to Alembic's head).
#: Revisions are numbered (`NNNN_name`), so a catalog's revision tells older from newer without loading
#: the migration scripts on every start.
SCHEMA_REVISION = "0014_tiers"


def _revision_number(revision: str) -> int | None:
    prefix = revision.split("_", 1)[0]
    return int(prefix) if prefix.isdigit() else None


def require_migrated(engine: Engine) -> None:
    """Raise CatalogError if the catalog is unreachable, damaged, has no schema yet, or has the schema
    of another version of equisplit-dr (older: `init` upgrades it; newer: this build is out of date)."""
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            revision = (
                conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                if "alembic_version" in tables
                else None
            )
    except DatabaseError as exc:
        raise CatalogError(
            f"the catalog database cannot be reached ({exc.orig.__class__.__name__})",
            hint="check DATABASE_URL and that the database is up",
        ) from None
    if "backups" not in tables:
        raise CatalogError(
            "the catalog has no schema yet",
            hint="run `equisplit-dr init` (a new repository) or `equisplit-dr catalog rebuild` (from storage)",
        )
    if revision != SCHEMA_REVISION:
        have, need = _revision_number(str(revision)), _revision_number(SCHEMA_REVISION)
        if revision is not None and have is not None and need is not None and have > need:
            raise CatalogError(
                f"the catalog's schema is at revision {revision}, newer than this equisplit-dr knows "
                f"({SCHEMA_REVISION}): a newer version wrote it",
                hint="upgrade equisplit-dr on this machine to the version the other machines run; "
                "nothing was written",
            )
        raise CatalogError(
            f"the catalog's schema is at revision {revision or 'none'}, older than this equisplit-dr needs "
            f"({SCHEMA_REVISION})",
            hint="run `equisplit-dr init` with the repository's key: it upgrades the catalog and changes "
            "nothing in storage (stop the workers first; they need the new schema too)",
        )
