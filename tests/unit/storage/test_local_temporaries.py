"""Local storage's leftover temporary files: listed with their age, removed one by one, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import StorageError
from app.storage.local import TEMP_PREFIX, LocalStorage


def test_temporaries_are_listed_and_only_they_can_be_removed(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    storage.put("packs", "ab" + "0" * 62, b"pack")
    storage.put("units", "b.in00000", b"unit")
    left = [
        tmp_path / "repo" / "packs" / "ab" / f"{TEMP_PREFIX}x1",
        tmp_path / "repo" / "units" / f"{TEMP_PREFIX}y",
    ]
    for path in left:
        path.write_bytes(b"half")
    found = dict(storage.temporaries())
    assert sorted(found) == ["packs/ab/.tmp-x1", "units/.tmp-y"]
    outside = tmp_path / f"{TEMP_PREFIX}outside"
    outside.write_bytes(b"not ours")
    for bad in ("packs/ab/" + "ab" + "0" * 62, "units/b.in00000", f"../{TEMP_PREFIX}outside", str(outside)):
        with pytest.raises(StorageError):
            storage.remove_temporary(bad)
    assert outside.exists() and storage.stat("units", "b.in00000") is not None
    for rel in found:
        storage.remove_temporary(rel)
    assert list(storage.temporaries()) == [] and not any(p.exists() for p in left)
    assert storage.stat("packs", "ab" + "0" * 62) is not None
