"""Content-defined chunking with the repository's FastCDC parameters, and chunk ids."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import blake3


@dataclass(frozen=True)
class ChunkerParams:
    """docs/FORMAT.md section 4; every writer of a repository chunks with the same values."""

    min_size: int = 256 * 1024
    avg_size: int = 1024 * 1024
    max_size: int = 4 * 1024 * 1024
    normalization: int = 1
    algorithm: str = "fastcdc-2020"

    def to_json(self) -> dict[str, Any]:
        return {
            "algorithm": self.algorithm,
            "min_size": self.min_size,
            "avg_size": self.avg_size,
            "max_size": self.max_size,
            "normalization": self.normalization,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ChunkerParams:
        return cls(
            min_size=int(doc["min_size"]),
            avg_size=int(doc["avg_size"]),
            max_size=int(doc["max_size"]),
            normalization=int(doc["normalization"]),
            algorithm=str(doc["algorithm"]),
        )


class Chunker:
    """Cuts buffers into chunks. One instance per thread: pyfastcdc's object is not thread safe."""

    def __init__(self, params: ChunkerParams, seed: int) -> None:
        from pyfastcdc import FastCDC  # ~20 ms: not for a process that only archives WAL

        self.params = params
        # pyfastcdc takes a seed that perturbs its gear table; it must fit in 64 bits.
        self._cdc = FastCDC(
            params.avg_size,
            min_size=params.min_size,
            max_size=params.max_size,
            normalized_chunking=params.normalization,  # type: ignore[arg-type]
            seed=seed,
        )

    def stream(self, handle: Any) -> Iterator[Any]:
        """Chunks of a binary stream; each chunk's data is valid only until the next is taken."""
        return iter(self._cdc.cut_stream(handle))

    def cut(self, data: bytes | memoryview) -> Iterator[memoryview]:
        """The chunks of `data`, in order; data smaller than the minimum is one chunk."""
        if len(data) <= self.params.min_size:
            if len(data):
                yield memoryview(data)
            return
        for chunk in self._cdc.cut_buf(data):
            yield chunk.data


class ChunkIds:
    """Keyed BLAKE3 of the plaintext: ids reveal nothing without the id key."""

    def __init__(self, id_key: bytes) -> None:
        self._key = id_key

    def __repr__(self) -> str:
        return "ChunkIds(<keyed>)"

    def of(self, data: bytes | memoryview) -> str:
        return blake3.blake3(data, key=self._key).hexdigest()
