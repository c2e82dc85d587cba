"""Walking a PostgreSQL data directory for a physical base backup: every file PostgreSQL needs, none of
the files its documentation says to leave out, and each tablespace under `pg_tblspc/<oid>/`
(docs/POSTGRES.md section 2; PostgreSQL 15 `basebackup.c` keeps the same lists)."""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from app.errors import SourceError
from app.sources.files import SOCKET_SKIPPED, Entry, entry_from_stat
from app.sources.watch import SizeWatch

#: Left out wherever they appear: recreated at start-up, or belonging to another backup.
EXCLUDED_FILES = frozenset(
    {
        "postgresql.auto.conf.tmp",
        "current_logfiles.tmp",
        "backup_label",
        "tablespace_map",
        "backup_manifest",
        "postmaster.pid",
        "postmaster.opts",
    }
)
#: Left out wherever they appear: the relation cache (rebuilt at start-up) and temporary files.
EXCLUDED_PREFIXES = ("pg_internal.init", "pgsql_tmp")
#: Directories kept (empty, with their mode) but not their contents. `pg_wal` keeps `archive_status/`.
EXCLUDED_CONTENTS = frozenset(
    {
        "pg_wal",
        "pg_stat_tmp",
        "pg_replslot",
        "pg_dynshmem",
        "pg_notify",
        "pg_serial",
        "pg_snapshots",
        "pg_subtrans",
    }
)
#: Read after every other file, just before pg_backup_stop, as pg_basebackup does.
CONTROL_FILE = "global/pg_control"
TABLESPACES = "pg_tblspc"

_RELATION = re.compile(r"^(\d+)(?:_(fsm|vm|init))?(?:\.\d+)?$")
#: The path (below the data directory) of a relation file: a database's (`base/<oid>/`), a shared one
#: (`global/`) or a tablespace's (`pg_tblspc/<oid>/PG_<version>/<oid>/`); main fork and others, any
#: segment. These are made of 8 KiB pages (app/backup/blocks.py).
RELATION_PATHS = r"^(?:base/\d+|global|pg_tblspc/\d+/PG_[^/]+/\d+)/\d+(?:_(?:fsm|vm|init))?(?:\.\d+)?$"
_TEMP_RELATION = re.compile(r"^t\d+_\d+(?:_(?:fsm|vm|init))?(?:\.\d+)?$")


@dataclass
class Tablespace:
    oid: str
    #: Where the tablespace lives on the source (`pg_tblspc/<oid>` points there).
    location: str
    #: Where its files are in the manifest.
    prefix: str


@dataclass
class PgWalk:
    entries: list[Entry]
    control: Entry
    tablespaces: list[Tablespace]
    errors: list[dict[str, str]]
    skipped: list[dict[str, str]]
    excluded: int = 0
    vanished: int = 0
    version: str = ""


def is_relation_file(name: str) -> bool:
    return _RELATION.match(name) is not None


def excluded_name(name: str) -> bool:
    """Whether a file or directory of this name is left out wherever it is."""
    return name in EXCLUDED_FILES or name.startswith(EXCLUDED_PREFIXES)


def unlogged_forks(names: list[str]) -> set[str]:
    """Files of a database directory that belong to unlogged relations, other than their init forks:
    PostgreSQL resets them from the init fork at the end of recovery, so a backup leaves them out."""
    unlogged = {m.group(1) for n in names if (m := _RELATION.match(n)) and m.group(2) == "init"}
    return {n for n in names if (m := _RELATION.match(n)) and m.group(1) in unlogged and m.group(2) != "init"}


def _is_database_dir(parts: tuple[str, ...]) -> bool:
    """`base/<db>`, or `pg_tblspc/<oid>/PG_<version>_<catversion>/<db>`."""
    return (len(parts) == 2 and parts[0] == "base") or (len(parts) == 4 and parts[0] == TABLESPACES)


class _Walker:
    def __init__(self, pgdata: Path, version: str, watch: SizeWatch | None = None) -> None:
        self.pgdata = str(pgdata)
        self.watch = watch
        self.version_prefix = f"PG_{version}_"
        self.walk = PgWalk([], None, [], [], [], version=version)  # type: ignore[arg-type]

    def _error(self, rel: str, exc: OSError) -> None:
        if exc.errno == errno.ENOENT:
            self.walk.vanished += 1  # dropped or truncated away meanwhile: WAL replay recreates it
            return
        self.walk.errors.append({"path": rel or ".", "error": exc.strerror or exc.__class__.__name__})

    def scan(self, rel_dir: str, *, follow: bool = False) -> None:
        full_dir = os.path.join(self.pgdata, rel_dir) if rel_dir else self.pgdata
        try:
            with os.scandir(full_dir) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self._error(rel_dir, exc)
            return
        parts = tuple(rel_dir.split("/")) if rel_dir else ()
        names = [item.name for item in items]
        skip = set()
        if _is_database_dir(parts):
            skip = unlogged_forks(names) | {n for n in names if _TEMP_RELATION.match(n)}
        in_tablespace_root = len(parts) == 2 and parts[0] == TABLESPACES
        for item in items:
            rel = f"{rel_dir}/{item.name}" if rel_dir else item.name
            if excluded_name(item.name) or item.name in skip:
                self.walk.excluded += 1
                continue
            if in_tablespace_root and not item.name.startswith(self.version_prefix):
                self.walk.excluded += 1  # another major version's files (pg_upgrade leftovers)
                continue
            is_tablespace_link = parts == (TABLESPACES,)
            try:
                st = os.stat(item.path) if is_tablespace_link else item.stat(follow_symlinks=False)
            except OSError as exc:
                self._error(rel, exc)
                continue
            if is_tablespace_link:
                self._tablespace(rel, item, st)
                continue
            entry = entry_from_stat(rel, item.path, st)
            if entry is None:
                self.walk.skipped.append({"path": rel, "reason": SOCKET_SKIPPED})
                continue
            if rel == CONTROL_FILE:
                self.walk.control = entry
                continue
            self.walk.entries.append(entry)
            if self.watch is not None:
                self.watch.add(entry)
            if entry.type != "dir":
                continue
            if parts == () and item.name in EXCLUDED_CONTENTS:
                if item.name == "pg_wal":
                    self._keep_empty(f"{rel}/archive_status")
                continue
            self.scan(rel)

    def _keep_empty(self, rel: str) -> None:
        full = os.path.join(self.pgdata, rel)
        try:
            st = os.stat(full, follow_symlinks=False)
        except OSError:
            return
        entry = entry_from_stat(rel, full, st)
        if entry is not None and entry.type == "dir":
            self.walk.entries.append(entry)

    def _tablespace(self, rel: str, item: os.DirEntry[str], st: os.stat_result) -> None:
        """`pg_tblspc/<oid>`: a symlink to the tablespace (or an in-place directory). Stored as a
        directory holding the tablespace's files, under the same path."""
        if not stat.S_ISDIR(st.st_mode):
            self.walk.errors.append({"path": rel, "error": "tablespace link does not lead to a directory"})
            return
        location = os.readlink(item.path) if item.is_symlink() else rel
        entry = entry_from_stat(rel, item.path, st)
        assert entry is not None
        entry.xattrs = {}
        self.walk.entries.append(entry)
        self.walk.tablespaces.append(Tablespace(item.name, location, rel))
        self.scan(rel)


def read_version(pgdata: Path) -> str:
    """The major version in PG_VERSION; SourceError if `pgdata` is not a data directory."""
    try:
        return (pgdata / "PG_VERSION").read_text().strip()
    except OSError as exc:
        raise SourceError(
            f"{pgdata} is not a PostgreSQL data directory (PG_VERSION: {exc.strerror})",
            hint="give the data directory with `source add NAME --postgres DSN --pgdata DIR`",
        ) from None


def walk_pgdata(pgdata: Path, watch: SizeWatch | None = None) -> PgWalk:
    """Every entry of the cluster at `pgdata` a base backup holds, in a stable order, with pg_control
    apart. Files that vanish during the walk are left out (WAL replay recreates them); any other
    unreadable path is an error the caller must not ignore."""
    version = read_version(pgdata)
    walker = _Walker(pgdata, version, watch)
    walker.scan("")
    if walker.walk.control is None:
        raise SourceError(f"{pgdata} has no {CONTROL_FILE}", hint="is this a PostgreSQL data directory?")
    return walker.walk


def system_identifier_of(pgdata: Path) -> int:
    """The system identifier in `global/pg_control` (its first 8 bytes, little-endian)."""
    with open(pgdata / CONTROL_FILE, "rb") as handle:
        return int.from_bytes(handle.read(8), "little")
