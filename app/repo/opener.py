"""Opening many chunk blobs in a row, as a restore does (32 chunks a MiB for PostgreSQL relation files,
docs/FORMAT.md section 4): the checks of `Repository.open_chunk`, each chunk's AES-GCM tag with its id
bound as associated data and the keyed BLAKE3 of its plaintext against its id, with the Python around
them cut to one header compare and the three library calls. Whatever is not the common case (a key
this opener does not hold, a bad header, a failed tag, a bad zstd frame, an unknown codec, a wrong
hash) is handed to `Repository.open_chunk`, which refreshes the keys or raises the error that names
the chunk, exactly as a chunk opened alone."""

from __future__ import annotations

from collections.abc import Callable

from blake3 import blake3
from cryptography.exceptions import InvalidTag
from zstandard import ZstdError

from app.repo import codecs
from app.repo.crypto import chunk_decrypts
from app.repo.format import AAD_HEADER, ENVELOPE_HEADER, ENVELOPE_OVERHEAD
from app.repo.repository import Repository

_ZSTD = int(codecs.Codec.ZSTD)
_RAW = int(codecs.Codec.RAW)


class ChunkOpener:
    """Opens chunk blobs for one thread (its zstd decompressor is this thread's)."""

    __slots__ = ("_decompress", "_decrypts", "_id_key", "_keyring", "_repo")

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self._decompress = codecs.thread_decompressor().decompress
        self._keyring = repo.keyring
        self._id_key = repo.keyring.id_key
        self._decrypts: dict[bytes, Callable[..., bytes]] = chunk_decrypts(repo.keyring.data_keys.values())

    def open(self, chunk_id: str, blob: memoryview, raw_length: int) -> bytes | memoryview:
        """The plaintext of the chunk blob `blob` (a raw chunk's as a view of the decrypted payload),
        checked against `chunk_id`; IntegrityError naming the chunk if it is not that chunk."""
        head = bytes(blob[:AAD_HEADER])  # magic, version, type, key id: bound as associated data
        decrypt = self._decrypts.get(head)
        if decrypt is not None and len(blob) >= ENVELOPE_OVERHEAD:
            try:
                payload = decrypt(
                    blob[AAD_HEADER:ENVELOPE_HEADER], blob[ENVELOPE_HEADER:], head + chunk_id.encode("ascii")
                )
                codec = payload[0]
                plain: bytes | memoryview | None = None
                if codec == _ZSTD:
                    plain = self._decompress(memoryview(payload)[1:], max_output_size=raw_length)
                elif codec == _RAW:
                    plain = memoryview(payload)[1:]
                if plain is not None and blake3(plain, key=self._id_key).hexdigest() == chunk_id:
                    return plain
            except (InvalidTag, ZstdError):
                pass
        # Not the common case: the chunk opened alone, which raises the error that names it (or opens
        # it with a data key added since, which this opener then takes up).
        plain = self._repo.open_chunk(chunk_id, blob, raw_length=raw_length)
        if self._repo.keyring is not self._keyring or len(self._decrypts) != len(self._keyring.data_keys):
            self._keyring = self._repo.keyring
            self._decrypts = chunk_decrypts(self._keyring.data_keys.values())
        return plain
