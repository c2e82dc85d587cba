"""Audit anchors in a region (docs/REPLICATION.md section 2, step 1): the sealed heads of the audit trail
are copied like the keyring, so a region alone can bring a lost or truncated trail back (`catalog
rebuild --from-region`) and show a truncation (`audit verify --from-region`). Anchors never change once
written: a name the region lacks is copied, oldest first, so a region never holds a newer anchor
without the older ones."""

from __future__ import annotations

from app.audit.anchors import PREFIX
from app.replication.copy import COPIED, copy_object
from app.repo.format import Kind
from app.storage import Storage


def _anchors(storage: Storage) -> list[str]:
    return sorted(i.name for i in storage.list(Kind.AUDIT, PREFIX) if i.name.startswith(PREFIX))


def copy_anchors(primary: Storage, region: Storage) -> int:
    """Copy the anchors the region lacks, oldest first; stops at the first failure. Returns how many."""
    there = set(_anchors(region))
    copied = 0
    for name in _anchors(primary):
        if name in there:
            continue
        if copy_object(primary, region, Kind.AUDIT, name).result == COPIED:
            copied += 1
    return copied
