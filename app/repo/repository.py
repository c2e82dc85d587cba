"""Open or create a repository in storage, and read and write its objects (docs/FORMAT.md)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.errors import EquisplitError, IntegrityError, ObjectNotFoundError, RepositoryError, WrongKeyError
from app.repo import codecs, manifest
from app.repo.cache import MetadataCache
from app.repo.chunker import Chunker, ChunkerParams, ChunkIds
from app.repo.crypto import check_header, describe, envelope_key_id, sealed_size
from app.repo.format import FORMAT_VERSION, PACK_INDEX_TYPES, PACK_TRAILER, Kind, ObjectType, Tier
from app.repo.jsondoc import dump_json, load_json
from app.repo.keys import Keyring, MasterKey
from app.repo.pack import PackBuilder, PackEntry, parse_index, parse_trailer
from app.storage import ObjectInfo, PutOptions, Storage

DEFAULT_PACK_TARGET = 16 * 1024 * 1024
KEYRING_NAME = "keyring"
KEYRING_NEXT = "keyring.next"


class Repository:
    """An opened repository: storage plus the keys and config to read and write it."""

    def __init__(
        self,
        storage: Storage,
        keyring: Keyring,
        config: dict[str, Any],
        *,
        master: MasterKey | None = None,
        keyring_blob: bytes | None = None,
        cache: MetadataCache | None = None,
    ) -> None:
        self.storage = storage
        #: The local metadata cache (app/repo/cache.py), if this process keeps one.
        self.cache = cache
        self.keyring = keyring
        self.config = config
        #: The master key and keyring object this process opened, to notice a rotation (`refresh_keys`).
        self._master = master
        self._keyring_blob = keyring_blob
        #: Where a long-running process finds its master key again after a rotation (a key file that
        #: `keys rotate` replaced): set by the Context that opened the repository.
        self.master_source: Callable[[], MasterKey] | None = None
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
        cache_root: Path | None = None,
    ) -> Repository:
        """Create a repository; refuse if storage already holds one. With `cache_root`, it keeps a local
        metadata cache there (app/repo/cache.py), starting with the config."""
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
        blob = keyring.seal(master)
        storage.put(Kind.KEYS, KEYRING_NAME, blob)
        sealed = keyring.current.seal(
            ObjectType.CONFIG, "config", codecs.encode(json.dumps(config).encode(), None)
        )
        storage.put(Kind.CONFIG, "config", sealed)
        cache = MetadataCache(cache_root, repository_id) if cache_root is not None else None
        if cache is not None:
            cache.put_config(sealed)
        return cls(storage, keyring, config, master=master, keyring_blob=blob, cache=cache)

    @classmethod
    def adopt(
        cls, storage: Storage, master: MasterKey, keyring_blob: bytes, config: dict[str, Any]
    ) -> Repository:
        """The repository another process of the same job opened (app/context.py: Handoff): the keyring
        object as it read it, opened here with `master`, and its config. Nothing is read from storage;
        WrongKeyError if `master` does not open that keyring."""
        return cls(
            storage, Keyring.open(keyring_blob, master), config, master=master, keyring_blob=keyring_blob
        )

    @property
    def keyring_blob(self) -> bytes | None:
        """The keyring object as this process last read (or wrote) it."""
        return self._keyring_blob

    @classmethod
    def open(cls, storage: Storage, master: MasterKey, *, cache_root: Path | None = None) -> Repository:
        """Open with `master`; WrongKeyError before anything else is read if it is the wrong key. With
        `cache_root`, the repository keeps a local metadata cache there (app/repo/cache.py), and the
        config is taken from it when a copy there opens."""
        try:
            blob = storage.get(Kind.KEYS, KEYRING_NAME)
        except ObjectNotFoundError:
            raise RepositoryError(
                f"no repository at {storage.location} (keys/keyring is missing)",
                hint="run `equisplit-dr init` to create one, or fix BACKUP_STORAGE_URL",
            ) from None
        try:
            keyring = Keyring.open(blob, master)
        except WrongKeyError as exc:
            raise _naming_a_pending_rotation(storage, exc) from None
        cache = MetadataCache(cache_root, keyring.repository_id) if cache_root is not None else None
        config = _cached_config(keyring, cache)
        if config is None:
            sealed = storage.get(Kind.CONFIG, "config")
            config = json.loads(codecs.decode(_open(keyring, sealed, ObjectType.CONFIG, "config"), "config"))
            if cache is not None:
                cache.put_config(sealed)
        if int(config.get("version", 0)) != FORMAT_VERSION:
            raise RepositoryError(
                f"repository format version {config.get('version')} is not supported "
                f"(this build reads version {FORMAT_VERSION})",
                hint="upgrade equisplit-dr",
            )
        return cls(storage, keyring, config, master=master, keyring_blob=blob, cache=cache)

    def rotate_master_key(
        self,
        new_master: MasterKey,
        *,
        new_data_key: bool = False,
        new_key_origin: str | None = None,
        finish: bool = True,
    ) -> None:
        """Re-wrap the keyring under `new_master` (docs/FORMAT.md section 2); old objects stay readable.

        `keys/keyring.next` (naming `new_key_origin`, where the new key is kept) marks the rotation as
        pending until `finish_rotation`; with `finish=False` the caller finishes once the new key is in
        its place (app/repo/rotation.py)."""
        previous = self.keyring.current_key_id
        added = self.keyring.add_data_key().key_id if new_data_key else None
        try:
            pending = self.keyring.seal(new_master, new_key_origin=new_key_origin)
            self.storage.put(Kind.KEYS, KEYRING_NEXT, pending)
            Keyring.open(self.storage.get(Kind.KEYS, KEYRING_NEXT), new_master)  # read back before switching
            blob = self.keyring.seal(new_master)
            self.storage.put(Kind.KEYS, KEYRING_NAME, blob)
        except BaseException:
            if added is not None:  # never seal with a key that no stored keyring holds
                self.keyring.drop_data_key(added, current=previous)
            raise
        self._master, self._keyring_blob = new_master, blob
        if finish:
            self.finish_rotation()

    def finish_rotation(self) -> None:
        """Remove the pending-rotation mark `keys/keyring.next` (idempotent)."""
        self.storage.delete(Kind.KEYS, KEYRING_NEXT)

    def refresh_keys(self) -> bool:
        """Adopt `keys/keyring` if a rotation replaced it since this process read it (one small GET):
        new objects are then sealed with the new current data key. Opened with the master key this
        process holds, else with the one `master_source` gives now; WrongKeyError, naming what to do, if
        neither opens it (this process then seals nothing more). True if the keyring changed."""
        blob = self.storage.get(Kind.KEYS, KEYRING_NAME)
        if self._keyring_blob is not None and blob == self._keyring_blob:
            return False
        try:
            if self._master is None:
                raise WrongKeyError("no master key held")
            ring, master = Keyring.open(blob, self._master), self._master
        except WrongKeyError:
            if self.master_source is None:
                raise _rotated_away() from None
            master = self.master_source()
            try:
                ring = Keyring.open(blob, master)
            except WrongKeyError:
                raise _rotated_away() from None
        if ring.repository_id != self.id:
            raise RepositoryError(
                f"the repository at {self.storage.location} was replaced (repository id "
                f"{ring.repository_id}, this process opened {self.id})",
                hint="restart this process",
            )
        self.keyring, self._master, self._keyring_blob = ring, master, blob
        return True

    def _open_sealed(self, sealed: bytes | memoryview, object_type: ObjectType, object_id: str) -> bytes:
        check_header(sealed, object_type, object_id)  # damage reads as damage, not as an unknown key
        key = self.keyring.data_keys.get(envelope_key_id(sealed))
        if key is None:  # perhaps a data key added since
            self.refresh_keys()
            return _open(self.keyring, sealed, object_type, object_id)
        return key.open(sealed, object_type, object_id, checked=True)

    # Chunks and packs -----------------------------------------------------------------------------

    def new_chunker(self) -> Chunker:
        return Chunker(self.chunker_params, self.keyring.chunker_seed)

    def seal_chunk(self, chunk_id: str, data: bytes | memoryview, level: int | None) -> bytes:
        return self.keyring.current.seal(ObjectType.CHUNK, chunk_id, codecs.encode(data, level))

    def pack_chunk(
        self, builder: PackBuilder, chunk_id: str, encoded: tuple[int, bytes | memoryview], raw_length: int
    ) -> None:
        """Seal a chunk's `encoded` form (`codecs.compress`) straight into `builder`'s pack: the same
        blob as `seal_chunk`, without the copies."""
        codec, body = encoded
        with builder.reserve(sealed_size(len(body))) as region:
            length = self.keyring.current.seal_into(ObjectType.CHUNK, chunk_id, codec, body, region)
        builder.commit(chunk_id, length, raw_length)

    def open_chunk(self, chunk_id: str, blob: bytes | memoryview, *, raw_length: int | None = None) -> bytes:
        """The plaintext of a chunk blob, checked against its id."""

        payload = self._open_sealed(blob, ObjectType.CHUNK, chunk_id)
        data = codecs.decode(payload, f"chunk {chunk_id}", raw_length)
        if self.chunk_ids.of(data) != chunk_id:
            raise IntegrityError(f"chunk {chunk_id} does not hash to its id")
        return data

    def finish_pack(self, pack_id: str, builder: PackBuilder, tier: str = Tier.STANDARD) -> memoryview:
        """The pack's bytes (a view of the builder's buffer); its sealed index's type names its tier
        (docs/FORMAT.md section 5)."""
        index = self.keyring.current.seal(
            PACK_INDEX_TYPES[tier], pack_id, codecs.encode(builder.index_plaintext(), 3, probe=False)
        )
        return builder.finish(index)

    def put_pack(
        self, pack_id: str, data: bytes | memoryview, storage_class: str | None = None, retain_until: datetime | None = None
    ) -> None:
        self.storage.put(
            Kind.PACKS, pack_id, data, PutOptions(storage_class=storage_class, retain_until=retain_until)
        )

    def read_blob(self, pack_id: str, offset: int, length: int) -> bytes:
        return self.storage.get(Kind.PACKS, pack_id, offset, length)

    def read_pack_index(self, pack_id: str, size: int | None = None) -> list[PackEntry]:
        """The entries of a pack, read from its tail alone."""
        return self.read_pack_index_tier(pack_id, size)[0]

    def read_pack_index_tier(self, pack_id: str, size: int | None = None) -> tuple[list[PackEntry], str]:
        """The entries and the tier of a pack, read from its tail alone."""
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
        return self.open_pack_index_tier(pack_id, self.storage.get(Kind.PACKS, pack_id, start, index_len))

    def open_pack_index(self, pack_id: str, sealed: bytes | memoryview) -> list[PackEntry]:
        """The entries of a pack's sealed index (the envelope between its blobs and its trailer)."""
        return self.open_pack_index_tier(pack_id, sealed)[0]

    def open_pack_index_tier(self, pack_id: str, sealed: bytes | memoryview) -> tuple[list[PackEntry], str]:
        """`open_pack_index` and the pack's tier, which the index's (authenticated) type says."""
        tier = Tier.COLD if len(sealed) > 5 and sealed[5] == ObjectType.COLD_PACK_INDEX else Tier.STANDARD
        plain = codecs.decode(
            self._open_sealed(sealed, PACK_INDEX_TYPES[tier], pack_id), f"pack {pack_id} index"
        )
        return parse_index(plain, pack_id), tier

    def list_packs(self) -> Iterator[ObjectInfo]:
        return self.storage.list(Kind.PACKS)

    # Sealed JSON objects: manifest roots, backup plans and unit results --------------------------------

    def write_json(
        self, kind: str, name: str, object_type: ObjectType, doc: dict[str, Any], options: PutOptions | None = None
    ) -> int:
        """Seal and store a JSON document (zstd); returns its stored size."""
        payload = codecs.encode(dump_json(doc), 3, probe=False)
        sealed = self.keyring.current.seal(object_type, name, payload)
        self.storage.put(kind, name, sealed, options)
        return len(sealed)

    def read_json(self, kind: str, name: str, object_type: ObjectType) -> dict[str, Any]:
        sealed = self.storage.get(kind, name)
        plain = codecs.decode(self._open_sealed(sealed, object_type, name), describe(object_type, name))
        doc: dict[str, Any] = load_json(plain)
        return doc

    def write_manifest_root(
        self, backup_id: str, root: dict[str, Any], retain_until: datetime | None = None
    ) -> int:
        """Seal and store a manifest's root (`manifest.root`), locked until `retain_until` if given;
        returns its stored size. Every chunk it lists MUST already be durable (docs/FORMAT.md section 7)."""
        if root.get("version") != manifest.MANIFEST_VERSION:
            raise ValueError(f"a manifest root is written as version {manifest.MANIFEST_VERSION}")
        options = PutOptions(retain_until=retain_until) if retain_until else None
        return self.write_json(Kind.MANIFESTS, backup_id, ObjectType.MANIFEST, root, options)

    def read_manifest(self, backup_id: str, *, cached: bool = False) -> dict[str, Any]:
        """`{"version", "backup", "entries": [entry, ...]}` of a version 1 or 2 manifest (docs/FORMAT.md
        section 6); a version 2 manifest's entries are read from the chunks its root lists. The root is
        always read from storage; with `cached`, each manifest chunk whose copy in the local metadata
        cache opens is taken from there (a backup's parent, a restore), and those read are cached."""
        doc = self._read_manifest_root(backup_id)
        if doc["version"] == 1:
            return doc
        cache = self.cache if cached else None
        entries = manifest.read_entries(self, backup_id, doc["entries"], cache=cache)
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


def _cached_config(keyring: Keyring, cache: MetadataCache | None) -> dict[str, Any] | None:
    """The config from the cache, if a copy there opens with the keyring (else it is dropped)."""
    sealed = cache.config() if cache is not None else None
    if cache is None or sealed is None:
        return None
    try:
        doc = json.loads(codecs.decode(_open(keyring, sealed, ObjectType.CONFIG, "config"), "config"))
    except (EquisplitError, ValueError):
        cache.drop("config")
        return None
    return doc if isinstance(doc, dict) and doc.get("repository_id") == keyring.repository_id else None


def _open(keyring: Keyring, sealed: bytes | memoryview, object_type: ObjectType, object_id: str) -> bytes:
    """Check the envelope's header first, so damage reads as damage, not as an unknown key."""
    check_header(sealed, object_type, object_id)
    key = keyring.key(envelope_key_id(sealed), describe(object_type, object_id))
    return key.open(sealed, object_type, object_id, checked=True)


def _rotated_away() -> WrongKeyError:
    return WrongKeyError(
        "keys/keyring was re-wrapped under a new master key (a key rotation) that this process does not "
        "hold: it seals nothing more",
        hint="set BACKUP_ENCRYPTION_KEY (or BACKUP_ENCRYPTION_KEY_FILE) to the new key and restart it",
    )


def pending_rotation(storage: Storage) -> str | None:
    """Where the new master key of an unfinished rotation is kept, as `keys/keyring.next` names it
    ("" if it names nothing); None if no rotation is pending."""
    try:
        doc = json.loads(storage.get(Kind.KEYS, KEYRING_NEXT))
    except ObjectNotFoundError:
        return None
    except ValueError:
        return ""
    origin = doc.get("new_key") if isinstance(doc, dict) else None
    return str(origin) if origin else ""


def _naming_a_pending_rotation(storage: Storage, error: WrongKeyError) -> WrongKeyError:
    """`error`, or one that says a rotation was left unfinished and where its new key is."""
    origin = pending_rotation(storage)
    if origin is None:
        return error
    where = origin or "the new key given to `keys rotate`"
    return WrongKeyError(
        "wrong master key: it does not open this repository's keyring, and a key rotation was left "
        f"unfinished (keys/keyring.next exists); its new master key is in {where}",
        hint="if the rotation re-wrapped the keyring, the new key opens it: use it, or run "
        "`equisplit-dr keys rotate` again with the same new key to finish the rotation; nothing was "
        "read or written",
    )
