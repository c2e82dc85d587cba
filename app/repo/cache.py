"""The local metadata cache: sealed copies of the repository objects a backup or a restore reads again
and again and that never change, kept on this machine so that they are not read from storage each time
(restic keeps a cache of the same kind: its index, snapshots and tree packs).

What it holds, per repository (a directory named by the repository id, so a repository re-created at
the same location never meets another's copies):

* `config`: the config object, as stored (written once, at init);
* `chunks/<2 hex>/<chunk id>`: manifest chunks (a manifest's entries, docs/FORMAT.md section 6), each
  a sealed chunk blob.

Nothing in it is trusted as it is: every copy is an AES-GCM envelope that is opened with the
repository's keys and its object id as associated data, and a chunk's plaintext must hash to its id,
so a damaged, swapped or planted copy fails to open and is read from storage instead (and dropped).
Both are immutable by the format (the config never changes; a chunk id names its content), so a copy
that opens is the object storage holds. A manifest's root is never cached: reading it from storage is
what shows the backup is still there. Verification, reconciliation and drills read storage, never this
cache. Writes are a temporary file and a rename, so processes sharing the cache never see half a copy;
the cache is kept under `max_bytes` by removing the copies least recently used.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

#: The default bound of one repository's cache.
DEFAULT_MAX_BYTES = 512 << 20


class MetadataCache:
    """One repository's cache directory. Thread- and process-safe; every failure to read or write it
    is a miss, never an error (the cache only ever saves a read)."""

    def __init__(self, root: Path, repository_id: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.dir = root / repository_id
        self.max_bytes = max_bytes

    def _chunk_path(self, chunk_id: str) -> Path:
        return self.dir / "chunks" / chunk_id[:2] / chunk_id

    def config(self) -> bytes | None:
        return self._read(self.dir / "config")

    def put_config(self, sealed: bytes) -> None:
        self._write(self.dir / "config", sealed)

    def chunk(self, chunk_id: str) -> bytes | None:
        """The sealed blob of a manifest chunk, if cached (marked as used just now)."""
        path = self._chunk_path(chunk_id)
        data = self._read(path)
        if data is not None:
            with contextlib.suppress(OSError):
                os.utime(path)
        return data

    def put_chunk(self, chunk_id: str, sealed: bytes | memoryview) -> None:
        self._write(self._chunk_path(chunk_id), bytes(sealed))

    def drop(self, what: str) -> None:
        """Forget a copy that failed to open (`config` or a chunk id)."""
        path = self.dir / "config" if what == "config" else self._chunk_path(what)
        with contextlib.suppress(OSError):
            path.unlink()

    def _read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except OSError:
            return None

    def _write(self, path: Path, data: bytes) -> None:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(temporary, "xb") as out:
                out.write(data)
            os.replace(temporary, path)
        except OSError:
            with contextlib.suppress(OSError):
                temporary.unlink()
            return

    def trim(self) -> None:
        """Remove the least recently used chunk copies until the cache holds at most `max_bytes`. A
        writer calls it once after a batch of copies (one scan of the cache directory)."""
        found: list[tuple[float, int, Path]] = []
        with contextlib.suppress(OSError):
            for group in os.scandir(self.dir / "chunks"):
                if not group.is_dir(follow_symlinks=False):
                    continue
                for item in os.scandir(group.path):
                    with contextlib.suppress(OSError):
                        st = item.stat(follow_symlinks=False)
                        found.append((st.st_mtime, st.st_size, Path(item.path)))
        total = sum(size for _, size, _ in found)
        for _, size, path in sorted(found, key=lambda f: f[0]):
            if total <= self.max_bytes:
                break
            with contextlib.suppress(OSError):
                path.unlink()
            total -= size
