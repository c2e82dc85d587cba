"""Master key rotation that survives a failure or a kill at any step (docs/KEYS.md).

The order, each step durable before the next:

1. the new key is on disk (a generated key: `master.key.next` beside the key file, mode 0600, synced);
2. `keys/keyring.next`, wrapped under the new key and naming where that key is kept, is written and
   read back: from here a rotation is *pending*;
3. `keys/keyring` is replaced by the keyring wrapped under the new key: the switch;
4. a generated key replaces the key file (`master.key.next` → `master.key`, directory synced);
5. `keys/keyring.next` is deleted: the rotation is finished.

Whatever stops it, the keyring opens with a key that exists on disk. A retry never overwrites a pending
key file: it reuses the key in it, and finishes the rotation (after step 3) or carries it out (before).
Any command that opens the repository with the key file finishes a rotation stopped between steps 3
and 4; a command given its key otherwise is told where the new key is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.errors import WrongKeyError
from app.repo.keys import MasterKey, fsync_dir
from app.repo.repository import Repository
from app.storage import Storage


def pending_key_file(key_file: Path) -> Path:
    """Where a rotation keeps the new key it generated until it replaces `key_file`."""
    return key_file.with_name(key_file.name + ".next")


@dataclass
class Rotation:
    repository: Repository
    #: This call finished a rotation an earlier run left after the switch (step 3), rotating no further.
    finished_interrupted: bool
    #: The file that holds the new key, when the rotation generated it.
    key_file: Path | None


def rotate(
    storage: Storage,
    current: Callable[[], MasterKey],
    new_master: MasterKey | None,
    *,
    new_data_key: bool,
    new_key_origin: str | None = None,
    key_file: Path | None = None,
) -> Rotation:
    """Rotate to `new_master`, or to a key generated next to `key_file` (which it then replaces).
    Finishes instead a pending rotation whose keyring already opens with the new key."""
    pending: Path | None = None
    if new_master is None:
        if key_file is None:
            raise ValueError("a generated key needs the key file it replaces")
        pending = pending_key_file(key_file)
        if pending.exists():  # an interrupted rotation's key: reused, never overwritten
            new_master = MasterKey.from_file(pending)
        else:
            new_master = MasterKey.generate()
            new_master.write_file(pending)  # step 1
        new_key_origin = f"file {pending}"
    try:
        repo = Repository.open(storage, current())
        switched = False
    except WrongKeyError as exc:
        try:
            repo = Repository.open(storage, new_master)
        except WrongKeyError:
            raise _naming_pending_file(exc, pending) from None
        switched = True
    if not switched:
        repo.rotate_master_key(
            new_master, new_data_key=new_data_key, new_key_origin=new_key_origin, finish=False
        )  # steps 2 and 3
    if pending is not None and key_file is not None:
        promote_key_file(pending, key_file)  # step 4
    repo.finish_rotation()  # step 5
    return Rotation(repo, switched, key_file if pending is not None else None)


def open_repository(
    storage: Storage,
    load_master: Callable[[], MasterKey],
    key_file: Path | None,
    *,
    may_finish: bool,
    cache_root: Path | None = None,
) -> Repository:
    """Open the repository. If the key does not open it and a rotation's pending key file does, the
    rotation stopped after its switch: with `may_finish` (the key came from `key_file`) the pending
    file replaces the key file and the rotation is finished; otherwise the error names the file."""
    pending = pending_key_file(key_file) if key_file is not None else None
    try:
        repo = Repository.open(storage, load_master(), cache_root=cache_root)
    except WrongKeyError as exc:
        if pending is None or not pending.exists() or not may_finish or key_file is None:
            raise _naming_pending_file(exc, pending) from None
        try:
            repo = Repository.open(storage, MasterKey.from_file(pending), cache_root=cache_root)
        except WrongKeyError:
            raise _naming_pending_file(exc, pending) from None
        promote_key_file(pending, key_file)
        repo.finish_rotation()
    repo.master_source = load_master
    return repo


def promote_key_file(pending: Path, key_file: Path) -> None:
    """Make the pending key the key file, atomically and durably; done already if it is gone."""
    try:
        os.replace(pending, key_file)
    except FileNotFoundError:
        return  # another process finished the rotation
    fsync_dir(key_file.parent)


def _naming_pending_file(error: WrongKeyError, pending: Path | None) -> WrongKeyError:
    if pending is None or not pending.exists():
        return error
    return WrongKeyError(
        error.message,
        detail=error.detail,
        hint=f"a key rotation left its new master key in {pending}: if the repository opens with it, "
        f"set BACKUP_ENCRYPTION_KEY_FILE={pending} or run `equisplit-dr keys rotate` again to finish the "
        "rotation; never delete that file before. " + (error.hint or ""),
    )
