"""Block-aligned chunks for files made of fixed-size pages (PostgreSQL relation files, docs/FORMAT.md
section 4, "Block-aligned files"): a file is cut at every multiple of a block group's size, so a page
changed between two backups changes the one chunk holding it, and every other chunk of the file is
found in the repository and not stored again. Content-defined chunks of 256 KiB to 4 MiB would store
again every chunk that holds one changed page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: PostgreSQL's page size; a block group is a multiple of it.
PAGE_SIZE = 8192
#: Bytes read at once from a streamed file, cut into groups as they come.
READ_BYTES = 4 << 20
#: Files up to this size (a piece of a big file is at most 32 MiB) are cut in memory.
IN_MEMORY_BYTES = 64 << 20


@dataclass(frozen=True)
class BlockRule:
    """Which files of a source are cut into block groups (`paths`, a regular expression on the path
    relative to the source's root) and how big a group is (`size`, a multiple of PAGE_SIZE)."""

    size: int
    paths: str

    def __post_init__(self) -> None:
        if self.size <= 0 or self.size % PAGE_SIZE:
            raise ValueError(f"a block group must be a positive multiple of {PAGE_SIZE} bytes, not {self.size}")

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "paths": self.paths}

    @classmethod
    def from_json(cls, doc: dict[str, Any] | None) -> BlockRule | None:
        return cls(int(doc["size"]), str(doc["paths"])) if doc else None


class _Cut:
    __slots__ = ("data",)

    def __init__(self, data: memoryview) -> None:
        self.data = data


class BlockChunker:
    """The chunker interface of app/repo/chunker.py (`cut`, `stream`) with fixed, aligned cut points:
    `size` bytes each, the last one shorter. A piece of a file (app/backup/plan.py) starts at a multiple
    of PIECE_BYTES, itself a multiple of every group size, so a piece's groups are the file's."""

    #: A file up to this size is read whole and its groups looked up in batches (app/backup/reader.py);
    #: streamed, each group would cost an index lookup of its own.
    in_memory_bytes = IN_MEMORY_BYTES

    def __init__(self, size: int) -> None:
        self.size = size

    def cut(self, data: bytes | memoryview) -> Iterator[memoryview]:
        view = memoryview(data)
        for start in range(0, len(view), self.size):
            yield view[start : start + self.size]

    def stream(self, handle: Any) -> Iterator[_Cut]:
        """Groups of a binary stream, read READ_BYTES at a time (a whole number of groups)."""
        step = max(self.size, READ_BYTES - READ_BYTES % self.size)
        while True:
            data = handle.read(step)
            if not data:
                return
            while len(data) < step:  # a short read before the end: fill the last group
                more = handle.read(step - len(data))
                if not more:
                    break
                data += more
            for view in self.cut(data):
                yield _Cut(view)


class ChunkerChoice:
    """Per file: the block chunker for a path the rule names, the repository's chunker otherwise."""

    def __init__(self, rule: BlockRule | None) -> None:
        self._pattern = re.compile(rule.paths) if rule is not None else None
        self._blocks = BlockChunker(rule.size) if rule is not None else None

    def for_path(self, path: str, default: Any) -> Any:
        if self._pattern is not None and self._pattern.search(path):
            return self._blocks
        return default
