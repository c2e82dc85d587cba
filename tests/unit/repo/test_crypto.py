"""Envelopes (docs/FORMAT.md section 3): layout, authentication of every byte, binding to id, type, key."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.errors import IntegrityError
from app.repo.crypto import DataKey, check_header, envelope_key_id
from app.repo.format import (
    ENVELOPE_HEADER,
    ENVELOPE_OVERHEAD,
    FORMAT_VERSION,
    KEY_ID_SIZE,
    MAGIC,
    NONCE_SIZE,
    TAG_SIZE,
    ObjectType,
)


def new_key(rng: random.Random) -> tuple[DataKey, bytes, bytes]:
    key_id, raw = rng.randbytes(KEY_ID_SIZE), rng.randbytes(32)
    return DataKey(key_id, raw), key_id, raw


@pytest.fixture
def object_id(rng: random.Random) -> str:
    return rng.randbytes(32).hex()


@pytest.mark.parametrize("size", [0, 1, 50, 4096, 300_000])
def test_seal_then_open_returns_the_payload(rng: random.Random, object_id: str, size: int) -> None:
    key, _, _ = new_key(rng)
    payload = rng.randbytes(size)
    envelope = key.seal(ObjectType.CHUNK, object_id, payload)
    assert len(envelope) == ENVELOPE_OVERHEAD + size
    assert key.open(envelope, ObjectType.CHUNK, object_id) == payload


def test_envelope_layout(rng: random.Random, object_id: str) -> None:
    key, key_id, raw = new_key(rng)
    payload = b"a distinctive plaintext that must not appear in the envelope " * 4
    envelope = key.seal(ObjectType.MANIFEST, object_id, payload)
    assert envelope[0:4] == MAGIC == b"EQDR"
    assert envelope[4] == FORMAT_VERSION == 1
    assert envelope[5] == ObjectType.MANIFEST == 4
    assert envelope[6:22] == key_id
    assert envelope_key_id(envelope) == key_id
    assert len(envelope[22:34]) == NONCE_SIZE
    assert b"distinctive" not in envelope
    # the contract, checked with AESGCM directly: nonce at 22..34, AAD = header[0:22] || object id
    plain = AESGCM(raw).decrypt(envelope[22:34], envelope[34:], envelope[:22] + object_id.encode("ascii"))
    assert plain == payload


def test_nonce_is_unique_across_1000_seals(rng: random.Random, object_id: str) -> None:
    key, _, _ = new_key(rng)
    envelopes = [key.seal(ObjectType.CHUNK, object_id, b"same payload") for _ in range(1000)]
    nonces = {e[ENVELOPE_HEADER - NONCE_SIZE : ENVELOPE_HEADER] for e in envelopes}
    assert len(nonces) == 1000
    assert len({e[ENVELOPE_HEADER:] for e in envelopes}) == 1000, "same payload, different ciphertexts"


def flip_positions(rng: random.Random, length: int) -> list[int]:
    """Every header byte, the first and last ciphertext bytes, a sample of the rest, every tag byte."""
    ciphertext = range(ENVELOPE_HEADER, length - TAG_SIZE)
    sample = rng.sample(ciphertext, min(40, len(ciphertext)))
    return sorted(
        {*range(ENVELOPE_HEADER), ciphertext[0], ciphertext[-1], *sample, *range(length - TAG_SIZE, length)}
    )


def test_flipping_any_single_byte_fails_open(rng: random.Random, object_id: str) -> None:
    key, _, _ = new_key(rng)
    envelope = key.seal(ObjectType.CHUNK, object_id, rng.randbytes(2000))
    positions = flip_positions(rng, len(envelope))
    assert len(positions) > ENVELOPE_HEADER + TAG_SIZE + 40
    for position in positions:
        damaged = bytearray(envelope)
        damaged[position] ^= rng.randrange(1, 256)
        with pytest.raises(IntegrityError) as caught:
            key.open(bytes(damaged), ObjectType.CHUNK, object_id)
        assert object_id in str(caught.value), f"byte {position}: the error names the object"


def test_opening_under_another_object_id_fails(rng: random.Random, object_id: str) -> None:
    key, _, _ = new_key(rng)
    envelope = key.seal(ObjectType.CHUNK, object_id, b"payload")
    other = rng.randbytes(32).hex()
    with pytest.raises(IntegrityError, match=other):
        key.open(envelope, ObjectType.CHUNK, other)
    with pytest.raises(IntegrityError):
        key.open(envelope, ObjectType.CHUNK, object_id[:-1])


def test_opening_as_another_type_fails(rng: random.Random, object_id: str) -> None:
    key, _, _ = new_key(rng)
    envelope = key.seal(ObjectType.CHUNK, object_id, b"payload")
    for other in ObjectType:
        if other is not ObjectType.CHUNK:
            with pytest.raises(IntegrityError, match="object type 2"):
                key.open(envelope, other, object_id)


def test_retyping_the_header_fails_the_tag(rng: random.Random, object_id: str) -> None:
    key, _, _ = new_key(rng)
    envelope = bytearray(key.seal(ObjectType.CHUNK, object_id, b"payload"))
    envelope[5] = ObjectType.MANIFEST
    with pytest.raises(IntegrityError, match="failed authentication"):
        key.open(bytes(envelope), ObjectType.MANIFEST, object_id)


def test_opening_with_another_data_key_fails(rng: random.Random, object_id: str) -> None:
    key, key_id, _ = new_key(rng)
    envelope = key.seal(ObjectType.CHUNK, object_id, b"payload")
    other, _, _ = new_key(rng)
    same_id_other_bytes = DataKey(key_id, rng.randbytes(32))
    for wrong in (other, same_id_other_bytes):
        with pytest.raises(IntegrityError, match="failed authentication"):
            wrong.open(envelope, ObjectType.CHUNK, object_id)


def test_relabelling_the_key_id_fails(rng: random.Random, object_id: str) -> None:
    """Rewriting the header's key id to another key's id is caught by the tag."""
    key, _, raw = new_key(rng)
    envelope = bytearray(key.seal(ObjectType.CHUNK, object_id, b"payload"))
    other_id = rng.randbytes(KEY_ID_SIZE)
    envelope[6:22] = other_id
    with pytest.raises(IntegrityError):
        DataKey(other_id, raw).open(bytes(envelope), ObjectType.CHUNK, object_id)


@pytest.mark.parametrize("keep", [0, 1, 4, 21, 33, ENVELOPE_OVERHEAD - 1])
def test_short_envelope_is_reported_truncated_naming_the_object(
    rng: random.Random, object_id: str, keep: int
) -> None:
    key, _, _ = new_key(rng)
    envelope = key.seal(ObjectType.CHUNK, object_id, b"payload")
    with pytest.raises(IntegrityError, match=rf"chunk {object_id} is truncated \({keep} bytes\)"):
        key.open(envelope[:keep], ObjectType.CHUNK, object_id)


def test_envelope_missing_its_last_bytes_fails_naming_the_object(rng: random.Random, object_id: str) -> None:
    key, _, _ = new_key(rng)
    envelope = key.seal(ObjectType.PACK_INDEX, object_id, rng.randbytes(100))
    for cut in (1, TAG_SIZE, TAG_SIZE + 1, 100):
        with pytest.raises(IntegrityError, match=f"index of pack {object_id}"):
            key.open(envelope[:-cut], ObjectType.PACK_INDEX, object_id)


def test_header_checks_name_what_is_wrong(rng: random.Random, object_id: str) -> None:
    key, _, _ = new_key(rng)
    envelope = key.seal(ObjectType.CONFIG, "config", b"{}")
    check_header(envelope, ObjectType.CONFIG, "config")
    bad_magic = b"EQPK" + envelope[4:]
    with pytest.raises(IntegrityError, match=r"config config is not an equisplit-dr object \(bad magic\)"):
        check_header(bad_magic, ObjectType.CONFIG, "config")
    newer = envelope[:4] + bytes([FORMAT_VERSION + 1]) + envelope[5:]
    with pytest.raises(IntegrityError, match=f"format version {FORMAT_VERSION + 1}") as caught:
        key.open(newer, ObjectType.CONFIG, "config")
    assert caught.value.hint == "upgrade equisplit-dr"


def test_data_key_refuses_wrong_sizes_and_hides_its_bytes(rng: random.Random) -> None:
    with pytest.raises(ValueError):
        DataKey(rng.randbytes(KEY_ID_SIZE), rng.randbytes(16))
    with pytest.raises(ValueError):
        DataKey(rng.randbytes(8), rng.randbytes(32))
    key, key_id, raw = new_key(rng)
    assert repr(key) == f"DataKey(key_id={key_id.hex()})"
    assert raw.hex() not in repr(key)
