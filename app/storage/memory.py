"""Memory storage: objects in a dict, for tests and demos; nothing survives the process."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from app.errors import ObjectNotFoundError
from app.storage.base import Capabilities, ObjectInfo, PutOptions
from app.storage.local import check_address, check_kind, check_prefix, check_range


class MemoryStorage:
    """Objects held in memory, with the same names, errors and atomicity as the other backends."""

    capabilities = Capabilities(ranged_reads=True, storage_classes=False, durable_put=False)

    def __init__(self) -> None:
        self._objects: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        return "memory://"

    def put(self, kind: str, name: str, data: bytes | memoryview, options: PutOptions | None = None) -> None:
        check_address(kind, name)
        blob = bytes(data)  # a private copy: a caller reusing a bytearray must not change the object
        with self._lock:
            self._objects[kind, name] = blob

    def get(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        check_address(kind, name)
        check_range(offset, length)
        with self._lock:
            blob = self._objects.get((kind, name))
        if blob is None:
            raise ObjectNotFoundError(kind, name, self.location)
        end = len(blob) if length is None else offset + length
        return blob[offset:end]

    def stat(self, kind: str, name: str) -> ObjectInfo | None:
        check_address(kind, name)
        with self._lock:
            blob = self._objects.get((kind, name))
        return None if blob is None else ObjectInfo(kind, name, len(blob))

    def list(self, kind: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object of `kind` whose name starts with `prefix`, in name order."""
        check_kind(kind)
        check_prefix(kind, prefix)
        with self._lock:
            found = sorted(
                (name, len(blob))
                for (k, name), blob in self._objects.items()
                if k == kind and name.startswith(prefix)
            )
        return iter([ObjectInfo(kind, name, size) for name, size in found])

    def delete(self, kind: str, name: str) -> None:
        check_address(kind, name)
        with self._lock:
            self._objects.pop((kind, name), None)

    def close(self) -> None:
        """Nothing to release; the objects stay until the instance is dropped."""
