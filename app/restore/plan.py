"""A restore's plan: the manifest entries asked for (the selection), where each of their chunks lies
(the catalog's chunk index), what the restore will write (RestorePlan), and how many worker processes
and threads write it. Reads only: nothing here touches the target."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app import forkserver
from app.catalog import chunks
from app.errors import ObjectNotFoundError, RestoreTargetError
from app.repo.format import tier_of
from app.restore.nodes import check_links, detach_links
from app.restore.target import selected
from app.sources.files import ROOT_PATH, SPECIAL_TYPES

if TYPE_CHECKING:
    from app.context import Context


@dataclass
class RestorePlan:
    backup_id: str
    source: str
    files: int
    dirs: int
    symlinks: int
    bytes: int
    packs: int
    missing_chunks: list[str] = field(default_factory=list)
    hardlinks: int = 0
    specials: int = 0  # FIFOs and device nodes
    #: What was not restored as it was (a device node without root, an unknown entry type).
    warnings: list[dict[str, str]] = field(default_factory=list)
    #: Entries already in the target: left as they are (skip_existing) or replaced (overwrite).
    skipped: int = 0
    replaced: int = 0
    #: Worker processes that wrote the files (1: threads in this process).
    processes: int = 1
    #: The thaw of its cold packs, for an archive in GLACIER or DEEP_ARCHIVE (docs/ARCHIVE.md).
    thaw: dict[str, Any] | None = None


def select(manifest: dict[str, Any], paths: list[str] | None) -> list[dict[str, Any]]:
    """The manifest's entries a restore of `paths` (None: all) writes, with their parent directories
    and the root; a path the backup does not hold is refused."""
    entries: list[dict[str, Any]] = manifest["entries"]
    if paths is None:
        check_links(entries)
        return entries
    chosen = [e for e in entries if selected(e["path"], paths)]
    found = {e["path"] for e in chosen}
    missing = [p for p in paths if p not in found and not any(f.startswith(p + "/") for f in found)]
    if missing:
        raise RestoreTargetError(
            f"the backup holds no path {missing[0]!r}",
            hint="list its files with `equisplit-dr backup show ID --files`",
        )
    # parents of selected entries keep their metadata too, and so does the root
    parents = {"/".join(e["path"].split("/")[:i]) for e in chosen for i in range(1, e["path"].count("/") + 1)}
    parents.add(ROOT_PATH)
    chosen = detach_links(chosen, entries)
    check_links(chosen)
    return [e for e in entries if e["path"] in parents and e["type"] == "dir"] + chosen


def locate(
    ctx: Context, backup_id: str, source: str, manifest: dict[str, Any], entries: list[dict[str, Any]]
) -> tuple[RestorePlan, dict[str, chunks.ChunkLocation]]:
    """The plan of writing `entries`, and where each of their chunks lies; a chunk the catalog does
    not know stops the restore here, before anything is written."""
    wanted = {c for e in entries if e["type"] == "file" for c in e["chunks"]}
    with ctx.sessions() as session:  # an archive reads its own (cold) copies: docs/ARCHIVE.md
        where = chunks.locate(session, wanted, tier_of(manifest.get("backup", {})))
    counts: dict[str, int] = {}
    size = 0
    for e in entries:
        kind = e["type"]
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "file":
            size += e.get("size", 0)
    plan = RestorePlan(
        backup_id,
        source,
        files=counts.get("file", 0),
        dirs=counts.get("dir", 0),
        symlinks=counts.get("symlink", 0),
        bytes=size,
        packs=len({loc.pack_id for loc in where.values()}),
        missing_chunks=sorted(wanted - where.keys()),
        hardlinks=counts.get("hardlink", 0),
        specials=sum(counts.get(kind, 0) for kind in SPECIAL_TYPES),
    )
    if plan.missing_chunks:
        raise ObjectNotFoundError(
            "chunk",
            plan.missing_chunks[0],
            "the catalog's chunk index",
            hint=f"{len(plan.missing_chunks)} chunk(s) unknown; run `equisplit-dr catalog rebuild`",
        )
    return plan, where


def worker_processes(ctx: Context, entries: list[dict[str, Any]]) -> int:
    """How many worker processes write these entries' files: one per core (forkserver.processes_for)
    for BACKUP_PROCESSES_MIN_BYTES or more in two files or more, else 1; 1 on remote storage unless
    BACKUP_PROCESSES is set (each read a request: one process reads each pack once, grouped by pack;
    shares of files in several processes read packs two or three times over and cost ~40 % more CPU,
    docs/BACKUP.md)."""
    files = [e for e in entries if e["type"] == "file"]
    return processes_for(ctx, len(files), sum(e.get("size", 0) for e in files))


def processes_for(ctx: Context, files: int, size: int) -> int:
    """worker_processes for `files` files of `size` bytes in all."""
    if files < 2 or size < ctx.settings.backup_processes_min_bytes:
        return 1
    if ctx.storage.capabilities.remote and not ctx.settings.backup_processes:
        return 1
    return forkserver.processes_for(ctx.settings)


#: A writing process's threads on remote storage when BACKUP_THREADS is not set: one waits for a pack's
#: GET while the other opens and writes the previous pack's files. More contend for the GIL around every
#: system call of every small file (docs/S3.md section 2).
REMOTE_THREADS = 2


def threads_per_process(ctx: Context, threads: int, processes: int) -> int:
    """A writing process's threads: on remote storage, where a thread waits for each request,
    BACKUP_THREADS shared out, or REMOTE_THREADS when it is not set; 1 on local storage, where a thread
    mostly runs Python (the others wait for its lock), and threads creating files in one directory at
    once spin on its lock in the kernel. Measured on 12,075 files (319 MB), a shared 2-core machine:
    os.open 5.0 CPU-s on 4 threads, 0.3 on one; the restore on 2 processes 4.7-5.5 CPU-s with one
    thread each, 5.7-9.4 with two. From S3 (moto), in one process: 53,385 futex calls on 4 threads,
    652 on 2, 41 on 1 (strace -c -f)."""
    if not ctx.storage.capabilities.remote:
        return 1
    share = max(1, threads // processes)
    return share if ctx.settings.backup_threads else min(REMOTE_THREADS, share)
