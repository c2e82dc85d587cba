"""A restore's worker process (app/restore/procpool.py): it writes a share of the files and does
nothing else, so it imports only the repository, its storage and the file writer (app/restore/files.py):
no catalog, no SQLAlchemy, no settings. Its fork server imports this module alone (app/forkserver.py:
RESTORE_PRELOAD), and each share comes as plain data: manifest entries and chunk locations as plain tuples."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from app import forkserver
from app.errors import WrongKeyError
from app.repo.keys import MasterKey
from app.repo.repository import Repository
from app.restore.files import Located, restore_files
from app.restore.tree import TargetTree
from app.storage import open_storage


@dataclass(frozen=True)
class WorkerHandoff:
    """What a worker needs to read the job's repository as the job's process opened it: the storage,
    the master key (never shown by repr) and the keyring object and config the job read, so nothing
    is read from storage again (two GETs per worker on S3)."""

    storage_url: str = field(repr=False)  # an S3 URL may carry an endpoint with credentials
    master: MasterKey = field(repr=False)
    keyring_blob: bytes | None = field(default=None, repr=False)
    config: dict[str, Any] | None = field(default=None, repr=False)


_repository: Repository | None = None
_counter: Synchronized[int] | None = None


def open_repository(handoff: WorkerHandoff) -> Repository:
    """The repository as the job's process opened it; read from storage again only if this keyring
    no longer opens with the job's key (a rotation finished in between)."""
    storage = open_storage(handoff.storage_url)
    if handoff.keyring_blob is not None and handoff.config is not None:
        try:
            repo = Repository.adopt(storage, handoff.master, handoff.keyring_blob, handoff.config)
        except WrongKeyError:
            pass
        else:
            repo.master_source = lambda: handoff.master
            return repo
    return Repository.open(storage, handoff.master)


def init_worker(handoff: WorkerHandoff, counter: Synchronized[int], parent: int) -> None:
    global _repository, _counter
    forkserver.init_worker(parent)
    _repository = open_repository(handoff)
    _counter = counter


def restore_share(
    root: str,
    replace: bool,
    entries: list[dict[str, Any]],
    where: Mapping[str, Located],
    keep_partial: bool,
    threads: int,
) -> int:
    """Write `entries` (files and pieces of big files) under the target `root`; how many."""
    assert _repository is not None and _counter is not None
    progress = forkserver.Progress(_counter)
    try:
        with TargetTree(root, replace=replace) as tree:
            restore_files(_repository, tree, entries, where, progress.add, keep_partial, threads)
    finally:
        progress.flush()
    return len(entries)
