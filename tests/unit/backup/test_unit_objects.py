"""A backup's temporary objects (app/backup/objects.py) are deleted together once its manifest is durable."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app.backup import objects
from app.errors import StorageError
from app.repo.format import Kind
from app.storage.faulty import FaultyStorage
from app.storage.local import LocalStorage


def _repo(storage: Any) -> Any:
    return SimpleNamespace(storage=storage)  # delete_all uses the repository's storage alone


def _fill(storage: LocalStorage, backup_id: str, units: int) -> None:
    for n in range(units):
        storage.put(Kind.UNITS, objects.input_name(backup_id, n), b"in")
        storage.put(Kind.UNITS, objects.output_name(backup_id, n), b"out")


def test_every_object_of_the_backup_goes_and_no_other_backups(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    _fill(storage, "b1", 9)
    _fill(storage, "b2", 2)
    objects.delete_all(_repo(storage), "b1")
    assert sorted(i.name for i in storage.list(Kind.UNITS)) == [
        objects.input_name("b2", 0),
        objects.input_name("b2", 1),
        objects.output_name("b2", 0),
        objects.output_name("b2", 1),
    ]
    objects.delete_all(_repo(storage), "b2")
    objects.delete_all(_repo(storage), "b2")  # nothing left: nothing to do
    assert list(storage.list(Kind.UNITS)) == []


def test_a_failed_delete_is_raised_after_the_others_ran(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    _fill(storage, "b1", 4)
    faulty = FaultyStorage(storage, {"delete": 3})
    with pytest.raises(StorageError, match="injected fault"):
        objects.delete_all(_repo(faulty), "b1")
    assert faulty.calls["delete"] == 8
    assert len(list(storage.list(Kind.UNITS))) == 1  # the one that failed stays, for reconcile to sweep
