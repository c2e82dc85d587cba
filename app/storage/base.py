"""The storage protocol: objects addressed as (kind, name), six verbs, capabilities as data."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

#: The object kinds the repository format uses (docs/FORMAT.md, section 1).
KINDS = frozenset({"keys", "config", "packs", "manifests", "wal", "locks", "units", "audit"})


@dataclass(frozen=True)
class ObjectInfo:
    """What storage knows of one object."""

    kind: str
    name: str
    size: int
    #: The storage class, where the backend lists one (S3); None elsewhere. Not part of identity: the
    #: same object listed by two backends compares equal.
    storage_class: str | None = field(default=None, compare=False)
    #: Until when storage refuses to delete it (S3 Object Lock, compliance mode), where `stat` knows.
    retain_until: datetime | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; new needs become fields here, not methods."""

    ranged_reads: bool = True
    storage_classes: bool = False
    durable_put: bool = True
    #: Every call is a request over the network (S3), not a file system call.
    remote: bool = False


@dataclass(frozen=True)
class PutOptions:
    """Per-object write options."""

    storage_class: str | None = None
    #: Lock the object in compliance mode until then (S3 Object Lock; the bucket must have it enabled).
    #: Backends without object lock ignore it.
    retain_until: datetime | None = None


@runtime_checkable
class Storage(Protocol):
    """A flat store of immutable objects. Every method is safe to call from many threads.

    `put` is atomic: a reader sees the whole object or nothing, never a prefix. Its `data` may be a view
    of a buffer the caller reuses once `put` returns (a pack's): a backend keeps no reference to it.
    `get` raises ObjectNotFoundError for a missing object; `stat` returns None for one.
    """

    capabilities: Capabilities

    @property
    def location(self) -> str:
        """The storage URL with any credential removed, for messages."""
        ...

    def put(self, kind: str, name: str, data: bytes | memoryview, options: PutOptions | None = None) -> None: ...

    def get(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes: ...

    def stat(self, kind: str, name: str) -> ObjectInfo | None: ...

    def list(self, kind: str, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def delete(self, kind: str, name: str) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ThawState:
    """Whether an object in an archive storage class can be read now (docs/ARCHIVE.md)."""

    #: In a class that must be restored before a read (S3 GLACIER, DEEP_ARCHIVE).
    frozen: bool
    #: A restore was requested and is still under way.
    thawing: bool = False

    @property
    def readable(self) -> bool:
        return not self.frozen


@runtime_checkable
class Thawing(Protocol):
    """What a backend with archive storage classes adds (S3): the thaw state of an object, and a restore
    request for it. Other backends have nothing to thaw and do not implement it."""

    def thaw_state(self, kind: str, name: str) -> ThawState | None:
        """None for a missing object."""
        ...

    def request_thaw(self, kind: str, name: str, days: int, tier: str) -> None:
        """Ask for a temporary readable copy for `days` days, at retrieval `tier` (Expedited, Standard,
        Bulk). Harmless for an object already thawing or thawed."""
        ...


def exists(storage: Storage, kind: str, name: str) -> bool:
    """Whether the object is in storage."""
    return storage.stat(kind, name) is not None
