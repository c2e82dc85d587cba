"""The structure check of one backup: its manifest reads, every chunk it lists is indexed, and (for a
PostgreSQL base backup) the WAL that makes it consistent is stored. Pack sizes are checked once for
all backups by the caller (app/verify/run.py), since many backups share a pack."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.catalog import chunks as chunk_index
from app.catalog.models import Backup
from app.errors import EquisplitError
from app.repo import manifest
from app.repo.format import Kind, tier_of
from app.repo.repository import Repository
from app.verify.problems import CHUNK_UNKNOWN, MANIFEST, WAL_MISSING, Problem
from app.wal import names

_LOCATE_BATCH = 20000


@dataclass
class BackupCheck:
    backup_id: str
    source: str
    packs: set[str] = field(default_factory=set)
    chunks: int = 0
    problems: list[Problem] = field(default_factory=list)


def check_structure(
    repo: Repository, sessions: sessionmaker[Session], backup: Backup, source: str
) -> BackupCheck:
    check = BackupCheck(backup.id, source)
    try:
        root, entries = repo.read_manifest_with_root(backup.id)
    except EquisplitError as exc:
        check.problems.append(Problem(MANIFEST, f"manifests/{backup.id}", exc.message))
        return check
    check.packs.update(c.pack_id for c in manifest.root_chunks(root))
    unknown: dict[str, Problem] = {}
    wanted: dict[str, list[str]] = {}
    tier = tier_of(root["backup"])  # an archive's file chunks are its cold copies (docs/ARCHIVE.md)
    for path, ids in manifest.file_chunks(entries):
        check.chunks += len(ids)
        for chunk_id in ids:
            wanted.setdefault(chunk_id, []).append(path)
        if len(wanted) >= _LOCATE_BATCH:
            _locate(sessions, wanted, check, unknown, tier)
            wanted = {}
    _locate(sessions, wanted, check, unknown, tier)
    check.problems.extend(unknown.values())
    check.problems.extend(_missing_wal(repo, root["backup"], source))
    return check


def _locate(
    sessions: sessionmaker[Session],
    wanted: dict[str, list[str]],
    check: BackupCheck,
    unknown: dict[str, Problem],
    tier: str,
) -> None:
    if not wanted:
        return
    with sessions() as session:
        where = chunk_index.locate(session, wanted, tier)
    check.packs.update(loc.pack_id for loc in where.values())
    for chunk_id, paths in wanted.items():
        if chunk_id in where:
            continue
        problem = unknown.setdefault(
            chunk_id,
            Problem(CHUNK_UNKNOWN, f"chunk {chunk_id}", "the chunk is in no pack the catalog knows"),
        )
        for path in dict.fromkeys(paths):
            problem.add_file(path)


def _missing_wal(repo: Repository, header: dict[str, Any], source: str) -> list[Problem]:
    """The segments from start_wal to stop_wal a PostgreSQL base backup needs, not in storage."""
    pg = header.get("postgres")
    if not pg or not pg.get("start_wal") or not pg.get("stop_wal"):
        return []
    size = int(pg["segment_size"])
    start, stop = names.parse(pg["start_wal"]), names.parse(pg["stop_wal"])
    first, last = start.segno(size), stop.segno(size)
    if first is None or last is None:
        return []
    problems = []
    for segno in range(first, last + 1):
        name = names.segment_name(start.timeline, segno, size)
        if repo.storage.stat(Kind.WAL, names.object_name(source, name)) is None:
            problems.append(
                Problem(
                    WAL_MISSING,
                    f"wal/{names.object_name(source, name)}",
                    f"WAL segment {name}, which the base backup needs to be consistent, is not in storage",
                )
            )
    return problems
