"""Fetch (docs/WAL.md section 4): restore one archived WAL file, verified, from the spool or from
storage; tell a missing file (quiet) from a hole in the archive (loud); keep a prefetcher ahead.
Storage only: recovery never needs the catalog."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from app.errors import EquisplitError, ObjectNotFoundError, WalError, WalNotFoundError
from app.repo.format import Kind
from app.repo.keys import load_master_key
from app.repo.repository import Repository
from app.settings import Settings
from app.storage import open_storage
from app.wal import names, segment
from app.wal.spool import Spool, default_root, write_atomically


@dataclass(frozen=True)
class FetchResult:
    name: str
    size: int
    from_spool: bool


def open_repository(settings: Settings) -> Repository:
    """The repository from storage and the master key alone: fetching needs no catalog (and skips the
    cost of loading one, which recovery would pay once per segment)."""
    secret = settings.backup_encryption_key
    master = load_master_key(
        secret.get_secret_value() if secret is not None else None,
        settings.backup_encryption_key_file,
        settings.default_key_file,
    )
    storage = open_storage(settings.storage_url)
    try:
        return Repository.open(storage, master)
    except BaseException:
        storage.close()
        raise


def fetch(
    repo: Repository,
    source: str,
    name: str,
    dest: Path,
    *,
    prefetch: int,
    concurrency: int = 4,
    spool_root: Path | None = None,
    start_prefetcher: bool = True,
) -> FetchResult:
    """Write WAL file `name` of `source` to `dest`, verified; keep a prefetcher `prefetch` segments ahead.

    With `start_prefetcher` false, the caller starts the prefetcher itself (`wal fetch` forks into it).
    WalNotFoundError if it is not in the archive; WalError if it is missing but later segments of its
    timeline exist (a hole); IntegrityError if the stored object is damaged.
    """
    wal = names.parse(name)
    spool = Spool(spool_root or default_root(dest), source)
    size = None
    if wal.is_segment and spool.dir.is_dir():
        size = spool.take(name, dest)
        if size is None and spool.in_flight(name) and spool.wait_for(name):
            size = spool.take(name, dest)
    from_spool = size is not None
    if size is None:
        data = read_archived(repo, source, wal)
        write_atomically(dest, data)
        size = len(data)
    if wal.is_segment and prefetch > 0:
        spool.set_want(name, size)
        if not start_prefetcher:
            return FetchResult(name, size, from_spool)
        spool.ensure_prefetcher()
        if not from_spool:
            # The prefetcher needs a second or two to start; this process is up and holds the keys, so
            # it fills the next few segments itself meanwhile (recovery asks for them right away).
            fill_spool(repo, source, spool, names.following(wal, size, min(prefetch, concurrency)))
    return FetchResult(name, size, from_spool)


def fill_spool(repo: Repository, source: str, spool: Spool, wanted: list[str]) -> None:
    """Fetch `wanted` into the spool in parallel; a segment that fails is left to the call that asks
    for it, which reports the error."""
    busy = spool.in_flight_names() | set(spool.spooled())
    todo = [name for name in wanted if name not in busy]

    def fill(name: str) -> None:
        with contextlib.suppress(EquisplitError):
            spool.write(name, lambda: segment.read(repo, source, name)[1])

    if todo:
        with ThreadPoolExecutor(len(todo), thread_name_prefix="wal-fill") as pool:
            list(pool.map(fill, todo))


def read_archived(repo: Repository, source: str, wal: names.WalName) -> bytes:
    """The verified bytes of archived file `wal`; WalNotFoundError or WalError (a hole) if missing."""
    try:
        return segment.read(repo, source, wal.name)[1]
    except ObjectNotFoundError:
        pass
    later = later_segment(repo, source, wal) if wal.is_segment else None
    if later is not None:
        raise WalError(
            f"WAL segment {wal.name} of source {source} is missing from storage "
            f"{repo.storage.location}, but later segments of its timeline are archived ({later})",
            hint="the archive has a hole: recovery cannot pass it. Find the segment (another copy of "
            "the archive, the old primary's pg_wal) and `wal push` it, or recover to a point before it",
        )
    raise WalNotFoundError(f"WAL file {wal.name} of source {source} is not in the archive")


def later_segment(repo: Repository, source: str, wal: names.WalName) -> str | None:
    """A segment after `wal` on its timeline, if `wal`'s predecessor is archived too (then `wal` is a
    hole, not the end). Looks within `wal`'s 4 GiB of WAL and the next: a bounded listing."""
    assert wal.log is not None and wal.seg is not None
    storage = repo.storage
    if wal.seg > 0:
        previous = f"{wal.name[:16]}{wal.seg - 1:08X}"
    elif wal.log > 0:
        previous = None  # the last segment of the previous log: its number depends on the segment size
    else:
        return None
    prefix = names.timeline_prefix(source, wal.timeline)
    if previous is not None and storage.stat(Kind.WAL, names.object_name(source, previous)) is None:
        return None
    found_previous = previous is not None
    for log in (wal.log - 1, wal.log, wal.log + 1) if previous is None else (wal.log, wal.log + 1):
        if log < 0:
            continue
        for info in storage.list(Kind.WAL, f"{prefix}{log:08X}"):
            parsed = names.split_object_name(info.name)
            if parsed is None or parsed[0] != source:
                continue
            other = names.parse(parsed[1])
            segment_name = other.segment_name
            if segment_name is None or other.kind == names.BACKUP:
                continue
            if segment_name < wal.name:
                found_previous = True
            elif segment_name > wal.name and found_previous:
                return other.name
    return None
