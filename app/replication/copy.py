"""Copying one object to a region: byte for byte (objects are already encrypted, never opened here),
skipped when the region already holds it with the expected size, written with the atomic `put`."""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import StorageError
from app.storage import Storage

COPIED, PRESENT, MISSING = "copied", "present", "missing"


@dataclass(frozen=True)
class CopyOutcome:
    """`copied` (bytes written), `present` (already there, nothing written), `missing` (not in the primary)."""

    result: str
    size: int


def copy_object(
    primary: Storage, region: Storage, kind: str, name: str, size: int | None = None, *, force: bool = False
) -> CopyOutcome:
    """Make the region hold the primary's (kind, name). `size`, when the catalog knows it, is checked
    against both copies; otherwise the primary's size is what the region must match. `force` copies even
    over an object of the right size (one verification found damaged)."""
    there = None if force else region.stat(kind, name)
    if there is not None and size is not None and there.size == size:
        return CopyOutcome(PRESENT, size)
    source = primary.stat(kind, name)
    if source is None:
        return CopyOutcome(MISSING, 0)
    if size is not None and source.size != size:
        raise StorageError(
            f"{kind}/{name} is {source.size} bytes in the primary, the catalog recorded {size}: not copied",
            hint="verify the primary (`equisplit-dr backup verify`)",
        )
    if there is not None and there.size == source.size:
        return CopyOutcome(PRESENT, source.size)
    data = primary.get(kind, name)
    if len(data) != source.size:
        raise StorageError(
            f"{kind}/{name}: read {len(data)} bytes from the primary, expected {source.size}; not copied",
            hint="the primary changed or failed while reading; the next pass tries again",
        )
    region.put(kind, name, data)
    return CopyOutcome(COPIED, len(data))


def sync_keyring(primary: Storage, region: Storage) -> bool:
    """Make the region's keyring equal the primary's (rotation replaces it in place); True if written."""
    current = primary.get("keys", "keyring")
    there = region.stat("keys", "keyring")
    if there is not None and there.size == len(current) and region.get("keys", "keyring") == current:
        return False
    region.put("keys", "keyring", current)
    return True
