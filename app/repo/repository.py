"""Open or create a repository in storage, and read and write its objects (docs/FORMAT.md)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from app.errors import IntegrityError, ObjectNotFoundError, RepositoryError
from app.repo import codecs, manifest
from app.repo.chunker import Chunker, ChunkerParams, ChunkIds
from app.repo.crypto import check_header, describe, envelope_key_id
from app.repo.format import FORMAT_VERSION, PACK_TRAILER, Kind, ObjectType
from app.repo.jsondoc import dump_json, load_json
from app.repo.keys import Keyring, MasterKey
from app.repo.pack import PackBuilder, PackEntry, parse_index, parse_trailer
from app.storage import ObjectInfo, PutOptions, Storage

DEFAULT_PACK_TARGET = 16 * 1024 * 1024
KEYRING_NAME = "keyring"
KEYRING_NEXT = "keyring.next"


class Repository:
    """An opened repository: storage plus the keys and config to read and write it."""

    def __init__(self, storage: Storage, keyring: Keyring, config: dict[str, Any]) -> None:
        self.storage = storage
        self.keyring = keyring
        self.config = config
        self.id = keyring.repository_id
        self.chunker_params = ChunkerParams.from_json(config["chunker"])
        self.pack_target_size = int(config.get("pack_target_size", DEFAULT_PACK_TARGET))
        self.chunk_ids = ChunkIds(keyring.id_key)

    # Creating and opening -----------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        storage: Storage,
        master: MasterKey,
        *,
        chunker: ChunkerParams | None = None,
        pack_target_size: int = DEFAULT_PACK_TARGET,
    ) -> Repository:
        """Create a repository; refuse if storage already holds one."""
        if storage.stat(Kind.KEYS, KEYRING_NAME) is not None or storage.stat(Kind.CONFIG, "config"):
            raise RepositoryError(
                f"storage {storage.location} already holds a repository",
                hint="use it as it is, or point BACKUP_STORAGE_URL at an empty location",
            )
        repository_id = secrets.token_hex(16)
        keyring = Keyring.create(repository_id)
        config = {
            "version": FORMAT_VERSION,
            "repository_id": repository_id,
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "chunker": (chunker or ChunkerParams()).to_json(),
            "chunk_id": "blake3-keyed-256",
            "pack_target_size": pack_target_size,
        }
        storage.put(Kind.KEYS, KEYRING_NAME, keyring.seal(master))
        sealed = keyring.current.seal(
            ObjectType.CONFIG, "config", codecs.encode(json.dumps(config).encode(), None)
        )
        storage.put(Kind.CONFIG, "config", sealed)
        return cls(storage, keyring, config)

    @classmethod
    def open(cls, storage: Storage, master: MasterKey) -> Repository:
        """Open with `master`; WrongKeyError before anything else is read if it is the wrong key."""
        try:
            blob = storage.get(Kind.KEYS, KEYRING_NAME)
        except ObjectNotFoundError:
            raise RepositoryError(
                f"no repository at {storage.location} (keys/keyring is missing)",
                hint="run `equisplit-dr init` to create one, or fix BACKUP_STORAGE_URL",
            ) from None
        keyring = Keyring.open(blob, master)
        sealed = storage.get(Kind.CONFIG, "config")

        config = json.loads(codecs.decode(_open(keyring, sealed, ObjectType.CONFIG, "config"), "config"))
        if int(config.get("version", 0)) != FORMAT_VERSION:
            raise RepositoryError(
                f"repository format version {config.get('version')} is not supported "
                f"(this build reads version {FORMAT_VERSION})",
                hint="upgrade equisplit-dr",
            )
        return cls(storage, keyring, config)

    def rotate_master_key(self, new_master: MasterKey, *, new_data_key: bool = False) -> None:
        """Re-wrap the keyring under `new_master` (docs/FORMAT.md section 2); old objects stay readable."""
        previous = self.keyring.current_key_id
        added = self.keyring.add_data_key().key_id if new_data_key else None
        try:
            self.storage.put(Kind.KEYS, KEYRING_NEXT, self.keyring.seal(new_master))
            Keyring.open(self.storage.get(Kind.KEYS, KEYRING_NEXT), new_master)  # read back before switching
            self.storage.put(Kind.KEYS, KEYRING_NAME, self.keyring.seal(new_master))
        except BaseException:
            if added is not None:  # never seal with a key that no stored keyring holds
                self.keyring.drop_data_key(added, current=previous)
            raise
        self.storage.delete(Kind.KEYS, KEYRING_NEXT)

    # Chunks and packs -----------------------------------------------------------------------------

    def new_chunker(self) -> Chunker:
        return Chunker(self.chunker_params, self.keyring.chunker_seed)

    def seal_chunk(self, chunk_id: str, data: bytes | memoryview, level: int | None) -> bytes:
        return self.keyring.current.seal(ObjectType.CHUNK, chunk_id, codecs.encode(data, level))

    def open_chunk(self, chunk_id: str, blob: bytes | memoryview, *, raw_length: int | None = None) -> bytes:
        """The plaintext of a chunk blob, checked against its id."""

        payload = _open(self.keyring, blob, ObjectType.CHUNK, chunk_id)
        data = codecs.decode(payload, f"chunk {chunk_id}", raw_length)
        if self.chunk_ids.of(data) != chunk_id:
            raise IntegrityError(f"chunk {chunk_id} does not hash to its id")
        return data

    def finish_pack(self, pack_id: str, builder: PackBuilder) -> bytes:
        index = self.keyring.current.seal(
            ObjectType.PACK_INDEX, pack_id, codecs.encode(builder.index_plaintext(), 3, probe=False)
        )
        return builder.finish(index)

    def put_pack(self, pack_id: str, data: bytes, storage_class: str | None = None) -> None:
        self.storage.put(Kind.PACKS, pack_id, data, PutOptions(storage_class=storage_class))

    def read_blob(self, pack_id: str, offset: int, length: int) -> bytes:
        return self.storage.get(Kind.PACKS, pack_id, offset, length)

    def read_pack_index(self, pack_id: str, size: int | None = None) -> list[PackEntry]:
        """The entries of a pack, read from its tail alone."""
        if size is None:
            info = self.storage.stat(Kind.PACKS, pack_id)
            if info is None:
                raise ObjectNotFoundError(Kind.PACKS, pack_id, self.storage.location)
            size = info.size
        if size < PACK_TRAILER:
            raise IntegrityError(f"pack {pack_id} is truncated ({size} bytes)")
        index_len = parse_trailer(self.storage.get(Kind.PACKS, pack_id, size - PACK_TRAILER), pack_id)
        start = size - PACK_TRAILER - index_len
        if start < 0:
            raise IntegrityError(f"pack {pack_id}: index length {index_len} exceeds the pack")
        return self.open_pack_index(pack_id, self.storage.get(Kind.PACKS, pack_id, start, index_len))

    def open_pack_index(self, pack_id: str, sealed: bytes | memoryview) -> list[PackEntry]:
        """The entries of a pack's sealed index (the envelope between its blobs and its trailer)."""
        plain = codecs.decode(
            _open(self.keyring, sealed, ObjectType.PACK_INDEX, pack_id), f"pack {pack_id} index"
        )
        return parse_index(plain, pack_id)

    def list_packs(self) -> Iterator[ObjectInfo]:
        return self.storage.list(Kind.PACKS)

    # Sealed JSON objects: manifest roots, backup plans and unit results --------------------------------

    def write_json(self, kind: str, name: str, object_type: ObjectType, doc: dict[str, Any]) -> int:
        """Seal and store a JSON document (zstd); returns its stored size."""
        payload = codecs.encode(dump_json(doc), 3, probe=False)
        sealed = self.keyring.current.seal(object_type, name, payload)
        self.storage.put(kind, name, sealed)
        return len(sealed)

    def read_json(self, kind: str, name: str, object_type: ObjectType) -> dict[str, Any]:
        sealed = self.storage.get(kind, name)
        plain = codecs.decode(_open(self.keyring, sealed, object_type, name), describe(object_type, name))
        doc: dict[str, Any] = load_json(plain)
        return doc

    def write_manifest_root(self, backup_id: str, root: dict[str, Any]) -> int:
        """Seal and store a manifest's root (`manifest.root`); returns its stored size. Every chunk it
        lists MUST already be durable (docs/FORMAT.md section 7)."""
        if root.get("version") != manifest.MANIFEST_VERSION:
            raise ValueError(f"a manifest root is written as version {manifest.MANIFEST_VERSION}")
        return self.write_json(Kind.MANIFESTS, backup_id, ObjectType.MANIFEST, root)

    def read_manifest(self, backup_id: str) -> dict[str, Any]:
        """`{"version", "backup", "entries": [entry, ...]}` of a version 1 or 2 manifest (docs/FORMAT.md
        section 6); a version 2 manifest's entries are read from the chunks its root lists."""
        doc = self._read_manifest_root(backup_id)
        if doc["version"] == 1:
            return doc
        entries = manifest.read_entries(self, backup_id, doc["entries"])
        return {"version": doc["version"], "backup": doc["backup"], "entries": entries}

    def read_manifest_with_root(self, backup_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The manifest's root as stored (a version 2 root lists where its entry chunks are) and its
        entries; every manifest chunk is decrypted and re-hashed on the way."""
        root = self._read_manifest_root(backup_id)
        if root["version"] == 1:
            return root, list(root["entries"])
        return root, manifest.read_entries(self, backup_id, root["entries"])

    def read_manifest_header(self, backup_id: str) -> dict[str, Any]:
        """The manifest's `backup` object alone; a version 2 manifest's entries are not read."""
        header: dict[str, Any] = self._read_manifest_root(backup_id)["backup"]
        return header

    def _read_manifest_root(self, backup_id: str) -> dict[str, Any]:
        try:
            doc = self.read_json(Kind.MANIFESTS, backup_id, ObjectType.MANIFEST)
        except ObjectNotFoundError:
            raise ObjectNotFoundError(
                Kind.MANIFESTS,
                backup_id,
                self.storage.location,
                hint="the backup was never completed, or its manifest was deleted",
            ) from None
        manifest.check_version(doc, backup_id)
        return doc

    def list_manifests(self) -> list[str]:
        return sorted(info.name for info in self.storage.list(Kind.MANIFESTS))


def _open(keyring: Keyring, sealed: bytes | memoryview, object_type: ObjectType, object_id: str) -> bytes:
    """Check the envelope's header first, so damage reads as damage, not as an unknown key."""
    check_header(sealed, object_type, object_id)
    key = keyring.key(envelope_key_id(sealed), describe(object_type, object_id))
    return key.open(sealed, object_type, object_id)
