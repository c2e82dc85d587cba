"""A problem a verification found: what is wrong, with which object, and which files it costs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Kinds of problem (docs/VERIFY.md section 3).
MANIFEST = "manifest"  # the manifest root or its entries cannot be read
CHUNK_UNKNOWN = "chunk unknown"  # a chunk the manifest lists is in no pack the catalog knows
PACK_MISSING = "pack missing"
PACK_SIZE = "pack size"  # the pack in storage is not the size the catalog recorded
CHUNK_DAMAGED = "chunk damaged"  # a blob fails its tag or its hash, or lies past the pack's end
PACK_INDEX = "pack index"  # the pack's own index is unreadable or disagrees with the catalog
WAL_MISSING = "wal missing"  # a WAL segment the PostgreSQL backup needs to be consistent
KEYRING = "keyring"

#: At most this many files are named per problem (the count says how many there are).
FILES_NAMED = 50


@dataclass
class Problem:
    kind: str
    object: str
    message: str
    files: list[str] = field(default_factory=list)
    file_count: int = 0

    def add_file(self, path: str) -> None:
        self.file_count += 1
        if len(self.files) < FILES_NAMED:
            self.files.append(path)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "object": self.object,
            "message": self.message,
            "files": self.files,
            "file_count": self.file_count,
        }
