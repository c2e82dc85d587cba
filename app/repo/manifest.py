"""Manifest version 2 (docs/FORMAT.md section 6): the entries as JSON lines cut into manifest chunks,
and a root that lists where those chunks are. Encoding, cutting and reading; storing new chunks needs
the catalog and lives in app/backup/manifests.py."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.errors import EquisplitError, IntegrityError, ObjectNotFoundError, RepositoryError
from app.repo.cache import MetadataCache
from app.repo.chunker import Chunker, ChunkerParams
from app.repo.format import Kind
from app.repo.jsondoc import dump_json, load_json
from app.repo.pack import coalesce
from app.storage import Storage

#: The manifest versions this build reads; it writes the last.
MANIFEST_VERSIONS = (1, 2)
MANIFEST_VERSION = 2
ENTRIES_FORMAT = "jsonl"
LINE_END = b"\n"
#: Fixed for every repository, never the config's chunker (docs/FORMAT.md section 6).
MANIFEST_CHUNKER = ChunkerParams(min_size=4 * 1024, avg_size=16 * 1024, max_size=64 * 1024, normalization=1)
#: Blobs of one pack less than READ_GAP apart are fetched in one ranged read of at most READ_LIMIT.
READ_GAP = 1024 * 1024
READ_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True)
class ManifestChunk:
    """One manifest chunk as the root lists it: the fields of its pack index record."""

    chunk_id: str
    pack_id: str
    offset: int
    length: int
    raw_length: int

    def to_json(self) -> list[Any]:
        return [self.chunk_id, self.pack_id, self.offset, self.length, self.raw_length]

    @classmethod
    def from_json(cls, doc: Sequence[Any]) -> ManifestChunk:
        chunk_id, pack_id, offset, length, raw_length = doc
        return cls(str(chunk_id), str(pack_id), int(offset), int(length), int(raw_length))


@dataclass(frozen=True)
class BlobRead:
    """One ranged read of a pack, covering the blobs of `chunks` (in offset order)."""

    pack_id: str
    offset: int
    length: int
    chunks: tuple[tuple[int, ManifestChunk], ...]  # (position in the root's list, chunk)


class ChunkSource(Protocol):
    """What reading a manifest's entries needs of the repository."""

    @property
    def storage(self) -> Storage: ...

    def open_chunk(
        self, chunk_id: str, blob: bytes | memoryview, *, raw_length: int | None = None
    ) -> bytes: ...


def encode_entries(entries: Iterable[dict[str, Any]]) -> bytes:
    """`json(entry) || "\\n"` for each entry, in the order given (the writer sorts them by path)."""
    return b"".join(dump_json(entry) + LINE_END for entry in entries)


def decode_entries(data: bytes, count: int, backup_id: str) -> list[dict[str, Any]]:
    """The entries of `data`; IntegrityError unless it is `count` lines of JSON objects."""
    if data and not data.endswith(LINE_END):
        raise IntegrityError(f"manifest {backup_id}: its entries do not end with a line end")
    lines = data.split(LINE_END)[:-1] if data else []
    if len(lines) != count:
        raise IntegrityError(f"manifest {backup_id}: {len(lines)} entries where its root says {count}")
    entries = []
    for number, line in enumerate(lines, 1):
        entry = load_json(line)
        if not isinstance(entry, dict):
            raise IntegrityError(f"manifest {backup_id}: entry {number} is not a JSON object")
        entries.append(entry)
    return entries


def manifest_chunker(seed: int) -> Chunker:
    """Cuts entries into manifest chunks: MANIFEST_CHUNKER with the keyring's chunker seed."""
    return Chunker(MANIFEST_CHUNKER, seed)


def root(header: dict[str, Any], size: int, count: int, chunks: Sequence[ManifestChunk]) -> dict[str, Any]:
    """The root document for entries of `size` bytes (`count` lines) stored as `chunks`."""
    return {
        "version": MANIFEST_VERSION,
        "backup": header,
        "entries": {
            "format": ENTRIES_FORMAT,
            "count": count,
            "bytes": size,
            "chunks": [chunk.to_json() for chunk in chunks],
        },
    }


def check_version(doc: dict[str, Any], backup_id: str) -> int:
    """The root's version; RepositoryError for one this build does not read."""
    version = doc.get("version")
    if version not in MANIFEST_VERSIONS:
        raise RepositoryError(
            f"manifest {backup_id} has version {version!r}; this build reads versions "
            f"{', '.join(map(str, MANIFEST_VERSIONS))}",
            hint="it was written by a newer equisplit-dr: upgrade to read it",
        )
    return int(version)


def plan_reads(chunks: Sequence[ManifestChunk]) -> list[BlobRead]:
    """Ranged reads covering every chunk's blob: by pack, in offset order, neighbours joined."""
    by_pack: dict[str, list[tuple[int, ManifestChunk]]] = {}
    for position, chunk in enumerate(chunks):
        by_pack.setdefault(chunk.pack_id, []).append((position, chunk))
    reads: list[BlobRead] = []
    for pack_id, members in by_pack.items():
        members.sort(key=lambda member: member[1].offset)
        for start, end, group in coalesce(
            members, lambda member: (member[1].offset, member[1].length), gap=READ_GAP, limit=READ_LIMIT
        ):
            reads.append(BlobRead(pack_id, start, end - start, tuple(group)))
    return reads


def read_entries(
    source: ChunkSource, backup_id: str, doc: dict[str, Any], *, cache: MetadataCache | None = None
) -> list[dict[str, Any]]:
    """The entries a version 2 root's `entries` object names, read from storage alone, or with `cache`
    each chunk whose cached copy opens from there (app/repo/cache.py), the others from storage and then
    cached. A missing pack is ObjectNotFoundError, a damaged chunk IntegrityError; both name the backup
    and the pack."""
    if doc.get("format") != ENTRIES_FORMAT:
        raise RepositoryError(
            f"manifest {backup_id}: entries format {doc.get('format')!r} is unknown",
            hint="it was written by a newer equisplit-dr: upgrade to read it",
        )
    chunks = [ManifestChunk.from_json(item) for item in doc["chunks"]]
    plaintexts: list[bytes | None] = [None] * len(chunks)
    if cache is not None:
        for position, chunk in enumerate(chunks):
            plaintexts[position] = _from_cache(source, cache, chunk)
    places = [position for position, plain in enumerate(plaintexts) if plain is None]
    for read in plan_reads([chunks[position] for position in places]):
        data = _fetch(source, backup_id, read)
        for index, chunk in read.chunks:
            start = chunk.offset - read.offset
            blob = memoryview(data)[start : start + chunk.length]
            plaintexts[places[index]] = _open(source, backup_id, chunk, blob)
            if cache is not None:
                cache.put_chunk(chunk.chunk_id, blob)
    if cache is not None and places:
        cache.trim()
    data = b"".join(plain or b"" for plain in plaintexts)
    if len(data) != doc["bytes"]:
        raise IntegrityError(
            f"manifest {backup_id}: its entries are {len(data)} bytes, its root says {doc['bytes']}"
        )
    return decode_entries(data, int(doc["count"]), backup_id)


def _from_cache(source: ChunkSource, cache: MetadataCache, chunk: ManifestChunk) -> bytes | None:
    """The plaintext of a cached manifest chunk, if its copy opens and hashes to its id (a copy that
    does not is dropped, and the chunk read from storage)."""
    blob = cache.chunk(chunk.chunk_id)
    if blob is None:
        return None
    try:
        return source.open_chunk(chunk.chunk_id, blob, raw_length=chunk.raw_length)
    except (EquisplitError, ValueError):
        cache.drop(chunk.chunk_id)
        return None


def _fetch(source: ChunkSource, backup_id: str, read: BlobRead) -> bytes:
    try:
        return source.storage.get(Kind.PACKS, read.pack_id, read.offset, read.length)
    except ObjectNotFoundError as exc:
        raise ObjectNotFoundError(
            Kind.PACKS,
            read.pack_id,
            source.storage.location,
            detail=f"the manifest of backup {backup_id} keeps entries in it",
            hint=f"restore packs/{read.pack_id} from a replica; until then backup {backup_id} "
            "cannot be listed or restored",
        ) from exc


def _open(source: ChunkSource, backup_id: str, chunk: ManifestChunk, blob: memoryview) -> bytes:
    try:
        return source.open_chunk(chunk.chunk_id, blob, raw_length=chunk.raw_length)
    except IntegrityError as exc:
        raise IntegrityError(
            f"manifest of backup {backup_id}: its chunk at offset {chunk.offset} of pack {chunk.pack_id} "
            "is damaged",
            detail=exc.message,
            hint=f"restore packs/{chunk.pack_id} from a replica; until then backup {backup_id} cannot be "
            "listed or restored",
        ) from exc


def file_chunks(entries: Iterable[dict[str, Any]]) -> Iterator[tuple[str, list[str]]]:
    """(path, chunk ids) of every entry that holds data."""
    for entry in entries:
        ids = entry.get("chunks")
        if entry.get("type") == "file" and ids:
            yield entry["path"], ids


def root_chunks(root: dict[str, Any]) -> list[ManifestChunk]:
    """The manifest chunks a version 2 root names (none for version 1)."""
    if root.get("version") == 1:
        return []
    return [ManifestChunk.from_json(item) for item in root["entries"]["chunks"]]
