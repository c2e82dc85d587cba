"""Seal and open envelopes (docs/FORMAT.md section 3): AES-256-GCM, random nonce, the header and the
object id bound as associated data."""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.errors import IntegrityError
from app.repo.format import (
    AAD_HEADER,
    ENVELOPE_HEADER,
    ENVELOPE_OVERHEAD,
    FORMAT_VERSION,
    KEY_ID_SIZE,
    MAGIC,
    NONCE_SIZE,
    TAG_SIZE,
    ObjectType,
)

_NAMES = {
    ObjectType.PACK_INDEX: "index of pack",
    ObjectType.COLD_PACK_INDEX: "index of cold pack",
    ObjectType.UNIT_RESULT: "unit result",
    ObjectType.WAL_SEGMENT: "wal segment",
}


def describe(object_type: ObjectType, object_id: str) -> str:
    """How messages name an object: `chunk <id>`, `index of pack <id>`, `manifest <id>`."""
    return f"{_NAMES.get(object_type, object_type.name.lower())} {object_id}"


_HEADER = struct.Struct(f"<4sBB{KEY_ID_SIZE}s{NONCE_SIZE}s")
#: The first six bytes of a good envelope of each type: magic, version, type.
_GOOD_START = {t: MAGIC + bytes([FORMAT_VERSION, int(t)]) for t in ObjectType}
_local = threading.local()
#: `seal_into` joins a payload up to this size as bytes; a bigger one goes through the scratch buffer.
SMALL_PAYLOAD = 64 * 1024
_CODEC_IDS = [bytes([codec]) for codec in range(256)]


def sealed_size(body_length: int) -> int:
    """The length of the envelope of a payload `codec || body` whose body is `body_length` bytes."""
    return ENVELOPE_OVERHEAD + 1 + body_length


def _scratch(size: int) -> bytearray:
    """This thread's payload buffer, at least `size` bytes: reused, so its pages are faulted in once."""
    buffer: bytearray | None = getattr(_local, "scratch", None)
    if buffer is None or len(buffer) < size:
        buffer = _local.scratch = bytearray(max(size, 1 << 20))
    return buffer


class DataKey:
    """One data key and its id; the key bytes never leave this object except wrapped."""

    __slots__ = ("_aead", "key_id")

    def __init__(self, key_id: bytes, key: bytes) -> None:
        if len(key_id) != KEY_ID_SIZE or len(key) != 32:
            raise ValueError("a data key is 32 bytes with a 16-byte id")
        self.key_id = key_id
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return f"DataKey(key_id={self.key_id.hex()})"

    def seal(self, object_type: ObjectType, object_id: str, payload: bytes) -> bytes:
        """The envelope of `payload` for the object `object_id` of `object_type`."""
        nonce = os.urandom(NONCE_SIZE)
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, int(object_type), self.key_id, nonce)
        aad = header[:AAD_HEADER] + object_id.encode("ascii")
        return header + self._aead.encrypt(nonce, payload, aad)

    def seal_into(
        self, object_type: ObjectType, object_id: str, codec: int, body: bytes | memoryview, out: memoryview
    ) -> int:
        """`seal(object_type, object_id, codec || body)` written at the start of `out` (at least
        `sealed_size(len(body))` bytes), without building the payload or the envelope as objects of
        their own; the envelope's length. The payload is assembled in this thread's scratch buffer, so a
        raw chunk is copied once (warm memory) and encrypted straight into `out`."""
        nonce = os.urandom(NONCE_SIZE)
        prefix = _GOOD_START[object_type] + self.key_id  # the header's bound part (AAD_HEADER bytes)
        aad = prefix + object_id.encode("ascii")
        size = 1 + len(body)
        out[:AAD_HEADER] = prefix
        out[AAD_HEADER:ENVELOPE_HEADER] = nonce
        if size <= SMALL_PAYLOAD:  # joined and encrypted as objects: cheaper than views for a few KiB
            out[ENVELOPE_HEADER : ENVELOPE_HEADER + size + TAG_SIZE] = self._aead.encrypt(
                nonce, _CODEC_IDS[codec] + body, aad
            )
            return ENVELOPE_HEADER + size + TAG_SIZE
        scratch = _scratch(size)
        scratch[0] = codec
        scratch[1:size] = body
        with memoryview(scratch) as view:
            self._aead.encrypt_into(nonce, view[:size], aad, out[ENVELOPE_HEADER : ENVELOPE_HEADER + size + TAG_SIZE])
        return ENVELOPE_HEADER + size + TAG_SIZE

    def open(
        self, envelope: bytes | memoryview, object_type: ObjectType, object_id: str, *, checked: bool = False
    ) -> bytes:
        """The payload; IntegrityError if the envelope was altered, moved, retyped or is not ours.
        `checked`: the caller ran check_header already."""
        if not checked:
            check_header(envelope, object_type, object_id)
        nonce = bytes(envelope[AAD_HEADER:ENVELOPE_HEADER])
        aad = bytes(envelope[:AAD_HEADER]) + object_id.encode("ascii")
        try:
            return self._aead.decrypt(nonce, envelope[ENVELOPE_HEADER:], aad)
        except InvalidTag:
            raise IntegrityError(
                f"{describe(object_type, object_id)} failed authentication: "
                "its bytes were altered, or it was moved or renamed",
                hint="the object is damaged in storage: restore it from a replica (secondary region)",
            ) from None


def chunk_decrypts(keys: Iterable[DataKey]) -> dict[bytes, Callable[..., bytes]]:
    """For a caller that opens many chunk envelopes in a row (app/repo/opener.py): each key's
    `decrypt(nonce, ciphertext || tag, associated data)` by the AAD_HEADER bytes its chunk envelopes
    start with (magic, version, type, key id), so that one lookup checks the header and finds the key.
    The caller binds those bytes and the chunk id as associated data, as `DataKey.open` does, and
    leaves every failure (InvalidTag included) to `open`, which names the object."""
    return {_GOOD_START[ObjectType.CHUNK] + key.key_id: key._aead.decrypt for key in keys}


def check_header(envelope: bytes | memoryview, object_type: ObjectType, object_id: str) -> None:
    """Raise IntegrityError naming the object if the envelope's header is not what is expected."""
    if len(envelope) >= ENVELOPE_OVERHEAD and envelope[:6] == _GOOD_START.get(object_type):
        return  # the common case, checked without building a message (a restore opens ~32 chunks a MiB)
    what = describe(object_type, object_id)
    if len(envelope) < ENVELOPE_OVERHEAD:
        raise IntegrityError(f"{what} is truncated ({len(envelope)} bytes)")
    magic, version, type_id, _key_id, _nonce = _HEADER.unpack_from(envelope)
    if magic != MAGIC:
        raise IntegrityError(f"{what} is not an equisplit-dr object (bad magic)")
    if version != FORMAT_VERSION:
        raise IntegrityError(
            f"{what} has format version {version}; this build reads version {FORMAT_VERSION}",
            hint="upgrade equisplit-dr",
        )
    if type_id != int(object_type):
        raise IntegrityError(f"{what} has object type {type_id}, expected {int(object_type)}")


def envelope_key_id(envelope: bytes | memoryview) -> bytes:
    """The key id named in an envelope's header."""
    return bytes(envelope[6 : 6 + KEY_ID_SIZE])
