"""The embedded catalog's SQLite file: what is wrong with it (damage, permissions), said in words an
operator can act on, and setting a damaged file aside so `catalog rebuild` can start a new one."""

from __future__ import annotations

import os
import pwd
import sqlite3
import stat
from pathlib import Path

from app import clock
from app.errors import CatalogError

#: SQLite's primary result codes that mean the file's content is not a (sound) database.
DAMAGE_CODES = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})
#: Primary result codes that mean the file or its directory cannot be opened or written.
ACCESS_CODES = frozenset({"SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH"})
#: The files SQLite keeps beside the database in WAL mode.
COMPANIONS = ("-wal", "-shm")
REBUILD_HINT = (
    "run `equisplit-dr catalog rebuild`: it sets the damaged file aside and rebuilds the catalog from storage"
)


def os_user() -> str:
    """`name (uid N)` of the process's effective user."""
    uid = os.geteuid()
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _owner(path: Path) -> str:
    st = path.stat()
    try:
        name = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        name = str(st.st_uid)
    return f"owned by {name}, mode {stat.S_IMODE(st.st_mode):04o}"


def _writable(path: Path, *, directory: bool = False) -> bool:
    mode = os.W_OK | (os.X_OK if directory else os.R_OK)
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def _unreachable(directory: Path) -> Path | None:
    """The first directory on the way from / to `directory` this user cannot enter, if any."""
    for ancestor in reversed([directory, *directory.parents]):
        if not ancestor.exists():
            return None
        if not os.access(ancestor, os.X_OK, effective_ids=os.access in os.supports_effective_ids):
            return ancestor
    return None


def _nearest_existing(directory: Path) -> Path:
    return next(p for p in [directory, *directory.parents] if p.exists())


def access_problem(path: Path) -> CatalogError | None:
    """A CatalogError naming the catalog file (or its -wal, -shm), its directory or the directory on the
    way to it that this process's OS user cannot enter or write, or None if nothing is in the way."""
    user = os_user()
    name = user.split(" ", 1)[0]
    directory = path.parent
    blocked = _unreachable(directory)
    if blocked is not None:
        return CatalogError(
            f"permission denied: OS user {user} cannot enter the directory {blocked} on the way to the "
            f"catalog {path}",
            detail=f"{blocked} is {_owner(blocked)}",
            hint=f"give {name} search permission on {blocked} (chmod/chown), or set EQUISPLIT_DR_HOME or "
            "DATABASE_URL to a catalog in a directory that user owns",
        )
    if not directory.exists():
        parent = _nearest_existing(directory)
        if _writable(parent, directory=True):
            return None
        return CatalogError(
            f"permission denied: OS user {user} cannot create the catalog directory {directory}",
            detail=f"{parent} is {_owner(parent)}",
            hint=f"create {directory} for {name} (`mkdir -p {directory} && chown {name} {directory}`), "
            "or set EQUISPLIT_DR_HOME or DATABASE_URL to a directory that user owns",
        )
    files = [
        candidate
        for candidate in (path, *(Path(f"{path}{suffix}") for suffix in COMPANIONS))
        if candidate.exists() and not _writable(candidate)
    ]
    blocked_dir = not _writable(directory, directory=True)
    if not files and not blocked_dir:
        return None
    what = [f"the catalog file {f}" for f in files]
    if blocked_dir:
        what.append(f"the catalog directory {directory}")
    fixes = [f"chown {name} {' '.join(str(f) for f in files)}"] if files else []
    if blocked_dir:
        fixes.append(f"chown {name} {directory} (or chmod it so that user may create files there)")
    return CatalogError(
        f"permission denied: OS user {user} cannot write {' nor '.join(what)}",
        detail="; ".join(f"{p} is {_owner(p)}" for p in [*files, *([directory] if blocked_dir else [])])
        + f". SQLite writes the catalog and creates {path.name}-wal and {path.name}-shm beside it",
        hint=" and ".join(fixes) + ", or run as the owner, or set DATABASE_URL to a catalog this user owns",
    )


def explain(exc: BaseException, path: Path) -> CatalogError | None:
    """The CatalogError for an sqlite3 error on the catalog at `path` (damage or access), else None."""
    if not isinstance(exc, sqlite3.Error):
        return None
    primary = _primary_code(exc)
    if primary in DAMAGE_CODES:
        return damaged(path, str(exc))
    if primary in ACCESS_CODES:
        return access_problem(path) or CatalogError(
            f"the catalog {path} cannot be opened or written ({exc})",
            hint=f"check that {path} and its directory exist and that OS user {os_user()} may write them",
        )
    return None


def _primary_code(exc: sqlite3.Error) -> str:
    """`SQLITE_READONLY` for `SQLITE_READONLY_DIRECTORY`: the primary result code's name."""
    return "_".join((getattr(exc, "sqlite_errorname", None) or "").split("_")[:2])


def damaged(path: Path, why: str) -> CatalogError:
    return CatalogError(f"the catalog database {path} is damaged ({why})", hint=REBUILD_HINT)


def check(path: Path) -> str | None:
    """Why the database file at `path` is damaged (SQLite's quick_check), or None if it is sound or
    absent. A permission problem raises CatalogError: a rebuild cannot mend that."""
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(path, timeout=30)
    except sqlite3.Error as exc:
        raise explain(exc, path) or CatalogError(f"the catalog {path} cannot be opened ({exc})") from None
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.Error as exc:
        if _primary_code(exc) in DAMAGE_CODES:
            return str(exc)
        raise explain(exc, path) or CatalogError(f"the catalog {path} cannot be checked ({exc})") from None
    finally:
        conn.close()
    problems = [str(row[0]) for row in rows if row and row[0] != "ok"]
    return "; ".join(problems[:3]) if problems else None


def set_aside(path: Path) -> Path:
    """Rename the damaged catalog (and its -wal and -shm files) to `<file>.damaged-<UTC time>`;
    returns the new name. Nothing is deleted."""
    stamp = clock.now().strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while aside.exists():  # a second rebuild within the same second
        n += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    try:
        for suffix in COMPANIONS:  # the companions first: the main file's name is what a reader opens
            companion = Path(f"{path}{suffix}")
            if companion.exists():
                os.replace(companion, f"{aside}{suffix}")
        os.replace(path, aside)
    except OSError as exc:
        raise access_problem(path) or CatalogError(
            f"the damaged catalog {path} cannot be set aside as {aside} ({exc.strerror})",
            hint="move it away yourself, then run `equisplit-dr catalog rebuild` again",
        ) from None
    return aside
