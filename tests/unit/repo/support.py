"""Seeded test data and storage probes shared by the repository unit tests."""

from __future__ import annotations

import random
from collections.abc import Iterator

from app.repo.chunker import ChunkerParams
from app.repo.keys import MasterKey
from app.storage.base import KINDS, ObjectInfo, PutOptions
from app.storage.memory import MemoryStorage

SEED = 20261127

#: Small chunker parameters, so a few MiB of data give enough chunks for statistics.
SMALL_CHUNKS = ChunkerParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024)


def random_hex(rng: random.Random, n_bytes: int) -> str:
    return rng.randbytes(n_bytes).hex()


def text_bytes(rng: random.Random, size: int) -> bytes:
    """Compressible, text-like bytes: words from a small vocabulary, generated from `rng`."""
    words = ["backup", "restore", "chunk", "pack", "manifest", "keyring", "envelope", "nonce", "zstd"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words).encode() + b" "
    return bytes(out[:size])


def same_master_key(a: MasterKey, b: MasterKey) -> bool:
    """Whether two master keys are the same key, judged by wrapping with one and unwrapping with the other."""
    try:
        return b.unwrap(a.wrap(b"probe", b"aad"), b"aad") == b"probe"
    except Exception:
        return False


def snapshot(storage: MemoryStorage) -> dict[tuple[str, str], bytes]:
    """Every object in storage, by (kind, name)."""
    return {
        (kind, info.name): storage.get(kind, info.name)
        for kind in sorted(KINDS)
        for info in storage.list(kind)
    }


class RecordingStorage:
    """MemoryStorage that records every call as (verb, kind, name)."""

    def __init__(self, inner: MemoryStorage) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.calls: list[tuple[str, str, str]] = []

    @property
    def location(self) -> str:
        return self.inner.location

    def put(self, kind: str, name: str, data: bytes | memoryview, options: PutOptions | None = None) -> None:
        self.calls.append(("put", kind, name))
        self.inner.put(kind, name, data, options)

    def get(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self.calls.append(("get", kind, name))
        return self.inner.get(kind, name, offset, length)

    def stat(self, kind: str, name: str) -> ObjectInfo | None:
        self.calls.append(("stat", kind, name))
        return self.inner.stat(kind, name)

    def list(self, kind: str, prefix: str = "") -> Iterator[ObjectInfo]:
        self.calls.append(("list", kind, prefix))
        return self.inner.list(kind, prefix)

    def delete(self, kind: str, name: str) -> None:
        self.calls.append(("delete", kind, name))
        self.inner.delete(kind, name)

    def close(self) -> None:
        self.inner.close()
