"""A physical base backup of a PostgreSQL cluster (docs/POSTGRES.md), as hooks of the backup engine:

* `begin`: connect with the source's DSN, check the cluster is the one the source archives and that
  archiving is on, then `pg_backup_start(label, fast => true)` in this session, which stays open;
* `walk`: the data directory and every tablespace, less what PostgreSQL says to leave out
  (app/sources/postgres.py); the units read the files in parallel as for any source;
* `finish`: read pg_control last, `pg_backup_stop(wait_for_archive => false)`, store the backup label
  and tablespace map it returns as files, and wait until the catalog holds every WAL segment from the
  backup's start to its end (the evidence that matters: durable in our storage, where PostgreSQL's own
  wait only sees its archiver's status, in steps of a second). Only then does finalize write the
  manifest.

If the session is lost (the server restarted, the connection was cut) PostgreSQL ends the backup itself,
so the server is never left in backup mode; `pg_backup_stop` then fails and so does the backup.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app import clock, forkserver
from app.backup import objects
from app.backup.blocks import BlockRule
from app.backup.hooks import SourceInfo, SourceWalk
from app.backup.pgwal import wait_for_wal
from app.backup.reader import read_file
from app.backup.writer import ChunkWriter
from app.catalog import wal as catalog_wal
from app.catalog.models import Backup
from app.context import Context
from app.errors import BackupFailedError, SourceError, first_line
from app.sources.confined import SourceRoot
from app.sources.files import Entry, Reusable
from app.sources.postgres import (
    CONTROL_FILE,
    RELATION_PATHS,
    Tablespace,
    system_identifier_of,
    walk_pgdata,
)
from app.sources.watch import SizeWatch
from app.wal import lsn, names

if TYPE_CHECKING:
    import psycopg

BACKUP_LABEL = "backup_label"
TABLESPACE_MAP = "tablespace_map"
MIN_VERSION = 150000
#: Relation files are cut into chunks of this many bytes at aligned offsets (app/backup/blocks.py,
#: docs/FORMAT.md section 4): an incremental stores the groups holding a changed page, not the 256 KiB
#: to 4 MiB content-defined chunks around it.
BLOCK_GROUP = 32 * 1024
#: Which files are cut into block groups; None cuts every file with FastCDC (the scheme before).
BLOCK_RULE: BlockRule | None = BlockRule(BLOCK_GROUP, RELATION_PATHS)
_LABEL_LINE = re.compile(r"^([A-Z ]+): (.*)$")
_START_WAL = re.compile(r"^([0-9A-F]+/[0-9A-F]+) \(file ([0-9A-F]{24})\)$")


@dataclass(frozen=True)
class BackupLabel:
    """What PostgreSQL's backup label says about where recovery must start."""

    start_lsn: int
    start_wal: str
    checkpoint_lsn: int
    timeline: int
    start_time: str


def parse_label(text: str) -> BackupLabel:
    """The fields of a backup label (PostgreSQL 15's `backup_label` format)."""
    fields = {}
    for line in text.splitlines():
        if match := _LABEL_LINE.match(line):
            fields[match.group(1)] = match.group(2).strip()
    try:
        start = _START_WAL.match(fields["START WAL LOCATION"])
        if start is None:
            raise KeyError("START WAL LOCATION")
        return BackupLabel(
            start_lsn=lsn.parse(start.group(1)),
            start_wal=start.group(2),
            checkpoint_lsn=lsn.parse(fields["CHECKPOINT LOCATION"]),
            timeline=int(fields["START TIMELINE"]),
            start_time=fields.get("START TIME", ""),
        )
    except (KeyError, ValueError) as exc:
        raise BackupFailedError(
            f"PostgreSQL returned a backup label this build cannot read ({exc})"
        ) from None


class PostgresHooks:
    """One base backup of one cluster; the session is held from `begin` to `finish` (or `close`)."""

    kind = "postgres"

    def __init__(self, source: SourceInfo) -> None:
        self.source = source
        self.conn: psycopg.Connection[Any] | None = None
        self.pgdata = Path(source.path or "")
        self.segment_size = 0
        self.system_identifier = 0
        self.server_version = 0
        self.started_at = clock.now()
        self.label = ""
        self.control: Entry | None = None
        self.tablespaces: list[Tablespace] = []
        #: Whether `begin` started the fork server of the units' processes, and whether the walk's size
        #: watch took it over (the engine then stops it, app/backup/engine.py); else `close` does.
        self.warmed = self.handed_over = False

    # Before the walk -----------------------------------------------------------------------------------

    def begin(self, ctx: Context, backup_id: str) -> None:
        import psycopg

        name = self.source.name
        try:
            self.conn = psycopg.connect(
                self.source.options.get("dsn", ""),
                autocommit=True,
                connect_timeout=30,
                application_name="equisplit-dr backup",
            )
        except psycopg.Error as exc:
            raise SourceError(
                f"cannot connect to the PostgreSQL cluster of source {name}",
                detail=first_line(exc),
                hint="check the source's DSN (`source list`), that the server is up, and the password in "
                "~/.pgpass or PGPASSWORD",
            ) from None
        conn = self.conn
        self.server_version = conn.info.server_version
        if self.server_version < MIN_VERSION:
            raise SourceError(
                f"source {name} runs PostgreSQL {self.server_version // 10000}; base backups need 15 or later"
            )
        # A server-wide timeout must not end this session while files are read, nor cancel the checkpoint.
        conn.execute("SET statement_timeout = 0")
        conn.execute("SET idle_session_timeout = 0")
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('archive_mode', 'archive_command', 'archive_library', 'wal_segment_size', "
                "'data_directory', 'wal_level')"
            ).fetchall()
        )
        archiving = settings.get("archive_command") or settings.get("archive_library")
        if (
            settings.get("archive_mode", "off") == "off"
            or not archiving
            or settings.get("wal_level") == "minimal"
        ):
            raise SourceError(
                f"source {name} does not archive its WAL (archive_mode {settings.get('archive_mode')}, "
                f"wal_level {settings.get('wal_level')}): a base backup is useless without it",
                hint=f"set archive_mode = on, wal_level = replica and archive_command = "
                f"'equisplit-dr wal push %p --source {name}', then restart the server",
            )
        self.segment_size = int(settings["wal_segment_size"])
        row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        assert row is not None
        self.system_identifier = int(row[0])
        with ctx.sessions() as session:
            archive = catalog_wal.get_archive(session, self.source.id)
        if archive is not None and archive.system_identifier not in (None, str(self.system_identifier)):
            raise SourceError(
                f"the server at source {name}'s DSN is the cluster {self.system_identifier}, but the source "
                f"archives WAL of the cluster {archive.system_identifier}",
                hint="point the DSN at the cluster whose archive_command pushes to this source, or register "
                "this cluster as a source of its own",
            )
        pgdata = self.source.path or settings.get("data_directory")
        if not pgdata:
            raise SourceError(
                f"the data directory of source {name} is unknown (SHOW data_directory needs a superuser)",
                hint="register the source with --pgdata DIR",
            )
        self.pgdata = Path(pgdata)
        try:
            on_disk = system_identifier_of(self.pgdata)
        except OSError as exc:
            raise SourceError(
                f"cannot read {self.pgdata / CONTROL_FILE}: {exc.strerror}",
                hint="run the backup on the database host, as the cluster's owner (or a member of its group "
                "with data_directory_mode 0750)",
            ) from None
        if on_disk != self.system_identifier:
            raise SourceError(
                f"{self.pgdata} holds the cluster {on_disk}, not the cluster {self.system_identifier} at the "
                f"source's DSN",
                hint="fix the source's --pgdata, or its DSN",
            )
        self._warm_up_processes(ctx, conn, backup_id)
        self.label = f"equisplit-dr {backup_id}"
        self.started_at = clock.now()
        conn.execute("SELECT pg_backup_start(%s, true)", [self.label])

    def _warm_up_processes(self, ctx: Context, conn: psycopg.Connection[Any], backup_id: str) -> None:
        """Start the fork server of the units' worker processes now, for a backup that reads every
        file of a cluster big enough to use them (BACKUP_PROCESSES_MIN_BYTES), so that its imports
        overlap pg_backup_start's checkpoint and the walk. Otherwise the walk's size watch starts it
        only once the walk has found that many bytes, and the first units wait for it (docs/POSTGRES.md
        section 1, step 3)."""
        import psycopg

        if forkserver.processes_for(ctx.settings) <= 1:
            return
        with ctx.sessions() as session:
            backup = session.get(Backup, backup_id)
            if backup is None or backup.type not in ("full", "archive"):
                return  # an incremental may read little: the watch decides, on what it will read
        try:
            row = conn.execute("SELECT sum(pg_database_size(oid))::bigint FROM pg_database").fetchone()
        except psycopg.Error:  # no CONNECT on some database: the watch decides
            return
        if row is not None and row[0] is not None and int(row[0]) >= ctx.settings.backup_processes_min_bytes:
            forkserver.warm_up(ctx.storage_url)  # as the engine would: S3 modules preloaded for S3
            self.warmed = True

    # The walk ------------------------------------------------------------------------------------------

    def walk(
        self, ctx: Context, watch: SizeWatch | None = None, reusable: Reusable | None = None
    ) -> SourceWalk:
        if self.warmed and watch is not None:
            watch.fired = True  # it started early (begin): the engine uses and stops it
            self.handed_over = True
        found = walk_pgdata(self.pgdata, watch)
        if found.errors:
            first = found.errors[0]
            raise SourceError(
                f"cannot read {len(found.errors)} path(s) of {self.pgdata}; first {first['path']}: {first['error']}",
                hint="run the backup as the cluster's owner (or a member of its group with "
                "data_directory_mode 0750); a base backup cannot leave files out",
            )
        self.control = found.control
        self.tablespaces = found.tablespaces
        warnings = [{"path": s["path"], "warning": s["reason"]} for s in found.skipped]
        return SourceWalk(
            "postgres",
            self.pgdata,
            found.entries,
            [],
            warnings,
            read={
                "missing_ok": True,
                "attempts": 1,
                "on_unreadable": "fail",
                "links": [t.prefix for t in found.tablespaces],  # pg_tblspc/<oid>: part of the source
                "blocks": BLOCK_RULE.to_json() if BLOCK_RULE is not None else None,
            },
            has_extra=True,
        )

    # After the units -----------------------------------------------------------------------------------

    def finish(self, ctx: Context, backup_id: str, make_writer: Callable[[], ChunkWriter]) -> None:
        writer = make_writer()
        try:
            self._finish(ctx, backup_id, writer)
        finally:
            writer.close()

    def _finish(self, ctx: Context, backup_id: str, writer: ChunkWriter) -> None:
        repo = ctx.repository
        assert self.control is not None
        control = self.control
        read = read_file(
            SourceRoot(str(self.pgdata)), control, repo.new_chunker(), writer, _ignore, attempts=1
        )
        control.chunks = read.chunks
        stop_lsn, label_text, map_text = self._stop(ctx, backup_id)
        stopped_at = clock.now()
        label = parse_label(label_text)
        entries = [control, self._content_entry(BACKUP_LABEL, label_text, writer, repo)]
        if map_text:
            entries.append(self._content_entry(TABLESPACE_MAP, map_text, writer, repo))
        writer.flush()
        size = self.segment_size
        first, last = lsn.segno_of(label.start_lsn, size), lsn.segno_before(stop_lsn, size)
        needed = [names.segment_name(label.timeline, segno, size) for segno in range(first, last + 1)]
        wait_for_wal(ctx, self.source.id, self.source.name, needed)
        meta = {
            "system_identifier": str(self.system_identifier),
            "server_version": self.server_version,
            "segment_size": size,
            "pgdata": str(self.pgdata),
            "label": self.label,
            "start_lsn": lsn.format_lsn(label.start_lsn),
            "checkpoint_lsn": lsn.format_lsn(label.checkpoint_lsn),
            "stop_lsn": lsn.format_lsn(stop_lsn),
            "timeline": label.timeline,
            "start_wal": needed[0],
            "stop_wal": needed[-1],
            "started_at": clock.iso(self.started_at),
            "stopped_at": clock.iso(stopped_at),
            "tablespaces": [t.__dict__ for t in self.tablespaces],
        }
        objects.write(
            repo,
            objects.extra_name(backup_id),
            {
                "entries": [e.to_json() for e in entries],
                "bytes_read": read.bytes_read + sum(e.size for e in entries[1:]),
                "bytes_new": read.bytes_new,
                "postgres": meta,
            },
        )

    def _stop(self, ctx: Context, backup_id: str) -> tuple[int, str, str]:
        import psycopg

        assert self.conn is not None
        timeout = ctx.settings.backup_pg_archive_timeout
        try:
            self.conn.execute(f"SET statement_timeout = {int(timeout) * 1000}".encode())
            row = self.conn.execute(
                # No wait inside PostgreSQL: it polls its archiver once a second, where wait_for_wal (pgwal.py) polls
                # the catalog, which holds a segment only once it is durable in storage (docs/POSTGRES.md).
                "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)"
            ).fetchone()
        except psycopg.errors.QueryCanceled:
            raise BackupFailedError(
                f"PostgreSQL did not archive the WAL backup {backup_id} needs within {timeout} s",
                hint="check archive_command, `SELECT * FROM pg_stat_archiver` and the server log; raise "
                "BACKUP_PG_ARCHIVE_TIMEOUT for a slow archive",
            ) from None
        except psycopg.Error as exc:
            raise BackupFailedError(
                f"the PostgreSQL session holding backup {backup_id} of source {self.source.name} was lost",
                detail=first_line(exc),
                hint="the server restarted or the connection was cut; PostgreSQL ends a backup with its "
                "session, so the server is not left in backup mode: run the backup again",
            ) from None
        finally:
            self.close()
        assert row is not None
        return lsn.parse(row[0]), str(row[1]), str(row[2] or "")

    def _content_entry(self, path: str, text: str, writer: ChunkWriter, repo: Any) -> Entry:
        """A file PostgreSQL handed over as text (backup label, tablespace map), stored byte for byte
        with the owner and mode the data directory's files have."""
        data = text.encode()
        st = os.stat(self.pgdata)
        mode = 0o640 if stat.S_IMODE(st.st_mode) & 0o050 else 0o600
        chunks = [writer.store(piece)[0] for piece in repo.new_chunker().cut(data)] if data else []
        return Entry(
            path=path,
            type="file",
            mode=mode,
            uid=st.st_uid,
            gid=st.st_gid,
            mtime_ns=time.time_ns(),
            size=len(data),
            chunks=chunks,
        )

    def close(self) -> None:
        """End the session; PostgreSQL aborts a backup still running in it. Idempotent."""
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a dead connection has nothing left to close
                conn.close()
        if self.warmed and not self.handed_over:  # the backup failed before its walk
            self.warmed = False
            forkserver.stop_server(used=False)


def _ignore(_n: int) -> None:
    return None
