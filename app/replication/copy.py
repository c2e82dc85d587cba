"""Copying one object to a region: byte for byte (objects are already encrypted, never opened here),
skipped when the region already holds it with the expected size, written with the atomic `put` in the
primary's storage class and, for an archive under Object Lock, the same lock (docs/REPLICATION.md,
"Archives in a frozen class"). An object frozen in the primary (GLACIER, DEEP_ARCHIVE) is not read: its
thaw is requested (once) and the outcome is `thawing`; a later pass copies it once it is readable."""

from __future__ import annotations

from dataclasses import dataclass

from app.archive.lock import is_locked
from app.archive.thaw import ThawOptions, needs_thaw, thaw_packs
from app.errors import StorageError
from app.storage import ObjectInfo, PutOptions, Storage

COPIED, PRESENT, MISSING = "copied", "present", "missing"
#: Frozen in the primary: a thaw is under way (or, with requests off, awaited); copied in a later pass.
THAWING = "thawing"


@dataclass(frozen=True)
class ColdRules:
    """How copies of archive objects are made: `thaw` for objects frozen in the primary (None: read them
    as they are), `lock` to give the region's copy the primary's Object Lock (BACKUP_ARCHIVE_OBJECT_LOCK)."""

    thaw: ThawOptions | None = None
    lock: bool = False


@dataclass(frozen=True)
class CopyOutcome:
    """`copied` (bytes written), `present` (already there, nothing written), `missing` (not in the primary),
    `thawing` (frozen in the primary; `reason` says whether the thaw was requested now or before)."""

    result: str
    size: int
    reason: str | None = None


def copy_object(
    primary: Storage,
    region: Storage,
    kind: str,
    name: str,
    size: int | None = None,
    *,
    force: bool = False,
    cold: ColdRules | None = None,
) -> CopyOutcome:
    """Make the region hold the primary's (kind, name). `size`, when the catalog knows it, is checked
    against both copies; otherwise the primary's size is what the region must match. `force` copies even
    over an object of the right size (one verification found damaged). `cold` says how objects of an
    archive class are thawed and locked."""
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
    rules = cold or ColdRules()
    if rules.thaw is not None and needs_thaw(source.storage_class):
        frozen = _still_frozen(primary, kind, name, source, rules.thaw)
        if frozen is not None:
            return frozen
    data = primary.get(kind, name)
    if len(data) != source.size:
        raise StorageError(
            f"{kind}/{name}: read {len(data)} bytes from the primary, expected {source.size}; not copied",
            hint="the primary changed or failed while reading; the next pass tries again",
        )
    region.put(kind, name, data, _put_options(region, source, rules))
    return CopyOutcome(COPIED, len(data))


def _still_frozen(
    primary: Storage, kind: str, name: str, source: ObjectInfo, options: ThawOptions
) -> CopyOutcome | None:
    """None when the frozen object is readable now (thawed); otherwise THAWING, its thaw requested unless
    someone did already (or requests are off: BACKUP_THAW_REQUEST=false)."""
    report = thaw_packs(primary, [name], options, wait=False, kind=kind)
    if not report.pending:
        return None
    if report.requested:
        why = f"thawing in the primary ({source.storage_class}; thaw requested now, tier {options.tier})"
    elif report.already_thawing:
        why = f"thawing in the primary ({source.storage_class}; thaw requested before)"
    else:
        why = (
            f"frozen in the primary ({source.storage_class}): no thaw requested (BACKUP_THAW_REQUEST=false); "
            "waiting for one"
        )
    return CopyOutcome(THAWING, source.size, why)


def _put_options(region: Storage, source: ObjectInfo, rules: ColdRules) -> PutOptions | None:
    """The primary's storage class and, with `rules.lock`, its Object Lock; nothing for a region without
    storage classes (local), nor for STANDARD (the region's own default class applies)."""
    if not region.capabilities.storage_classes:
        return None
    storage_class = source.storage_class if source.storage_class not in (None, "STANDARD") else None
    retain_until = source.retain_until if rules.lock and is_locked(source.retain_until) else None
    if storage_class is None and retain_until is None:
        return None
    return PutOptions(storage_class=storage_class, retain_until=retain_until)


def sync_keyring(primary: Storage, region: Storage) -> bool:
    """Make the region's keyring equal the primary's (rotation replaces it in place); True if written."""
    current = primary.get("keys", "keyring")
    there = region.stat("keys", "keyring")
    if there is not None and there.size == len(current) and region.get("keys", "keyring") == current:
        return False
    region.put("keys", "keyring", current)
    return True
