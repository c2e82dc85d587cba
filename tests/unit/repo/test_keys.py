"""The master key and the keyring (docs/FORMAT.md section 2)."""

from __future__ import annotations

import base64
import json
import os
import random
import stat
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.errors import EquisplitError, MasterKeyError, RepositoryError, WrongKeyError
from app.repo.format import KEYRING_AAD_PREFIX, KEYRING_FORMAT, NONCE_SIZE, TAG_SIZE, ObjectType
from app.repo.keys import Keyring, MasterKey, load_master_key
from tests.unit.repo.support import random_hex, same_master_key

# MasterKey.from_hex ---------------------------------------------------------------------------------


def test_from_hex_accepts_64_hex_in_either_case_and_strips_whitespace(rng: random.Random) -> None:
    text = random_hex(rng, 32)
    key = MasterKey.from_hex(text, origin="test")
    assert same_master_key(key, MasterKey.from_hex(text.upper(), origin="test"))
    assert same_master_key(key, MasterKey.from_hex(f"  {text}\n", origin="test"))
    assert not same_master_key(key, MasterKey.from_hex(random_hex(rng, 32), origin="test"))


def test_from_hex_refuses_a_128_bit_key_and_says_why(rng: random.Random) -> None:
    text = random_hex(rng, 16)
    with pytest.raises(MasterKeyError) as caught:
        MasterKey.from_hex(text, origin="BACKUP_ENCRYPTION_KEY")
    message = str(caught.value)
    assert "BACKUP_ENCRYPTION_KEY" in message
    assert "32 hex characters (128 bits)" in message
    assert "64 hex characters (256 bits)" in message
    assert text not in message
    assert caught.value.exit_code == 3


@pytest.mark.parametrize("n_hex", [0, 63, 65, 128])
def test_from_hex_refuses_other_lengths(rng: random.Random, n_hex: int) -> None:
    text = random_hex(rng, 64)[:n_hex]
    with pytest.raises(MasterKeyError, match=f"it is {n_hex} hex characters") as caught:
        MasterKey.from_hex(text, origin="test")
    if text:
        assert text not in str(caught.value)


@pytest.mark.parametrize("damage", ["g", "-", " ", "é", "0x"])
def test_from_hex_refuses_non_hex_without_echoing_it(rng: random.Random, damage: str) -> None:
    text = random_hex(rng, 32)
    bad = text[:20] + damage + text[20 + len(damage) :]
    with pytest.raises(MasterKeyError, match="not hexadecimal") as caught:
        MasterKey.from_hex(bad, origin="test")
    message = str(caught.value)
    assert bad not in message
    assert text[:20] not in message and text[-20:] not in message


def test_repr_and_str_hide_the_key(rng: random.Random) -> None:
    text = random_hex(rng, 32)
    key = MasterKey.from_hex(text, origin="test")
    assert repr(key) == str(key) == "MasterKey(<hidden>)"
    assert text not in repr([key]) and text not in f"{key!r} {key}"


# Key files ------------------------------------------------------------------------------------------


def test_from_file_reads_the_key(tmp_path: Path, rng: random.Random) -> None:
    text = random_hex(rng, 32)
    path = tmp_path / "master.key"
    path.write_text(text + "\n", encoding="ascii")
    path.chmod(0o600)
    assert same_master_key(MasterKey.from_file(path), MasterKey.from_hex(text, origin="test"))


def test_from_file_missing_says_so(tmp_path: Path) -> None:
    path = tmp_path / "absent.key"
    with pytest.raises(MasterKeyError, match=f"master key file {path} does not exist") as caught:
        MasterKey.from_file(path)
    assert caught.value.hint is not None and "BACKUP_ENCRYPTION_KEY_FILE" in caught.value.hint


def test_from_file_with_a_short_key_names_the_file_not_the_key(tmp_path: Path, rng: random.Random) -> None:
    text = random_hex(rng, 16)
    path = tmp_path / "short.key"
    path.write_text(text, encoding="ascii")
    path.chmod(0o600)
    with pytest.raises(MasterKeyError) as caught:
        MasterKey.from_file(path)
    assert f"file {path}" in str(caught.value)
    assert "128 bits" in str(caught.value)
    assert text not in str(caught.value)


@pytest.mark.parametrize("content", [b"not a key\n", b"\xff\xfe" + b"ab" * 31, b""])
def test_from_file_with_bad_content_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(MasterKeyError, match=str(path)) as caught:
        MasterKey.from_file(path)
    assert "ab" * 31 not in str(caught.value)


def test_from_file_on_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="cannot be read"):
        MasterKey.from_file(tmp_path)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620])
def test_from_file_refuses_a_key_file_its_group_or_others_can_access(
    tmp_path: Path, rng: random.Random, mode: int
) -> None:
    text = random_hex(rng, 32)
    path = tmp_path / "master.key"
    path.write_text(text + "\n", encoding="ascii")
    path.chmod(mode)
    with pytest.raises(MasterKeyError) as caught:
        MasterKey.from_file(path)
    assert str(path) in caught.value.message and f"{mode:04o}" in caught.value.message
    assert caught.value.hint == f"chmod 600 {path}"
    assert text not in str(caught.value) + caught.value.hint
    with pytest.raises(MasterKeyError, match="chmod 600"):
        load_master_key(None, path, None)
    path.chmod(0o600)
    assert same_master_key(MasterKey.from_file(path), MasterKey.from_hex(text, origin="test"))
    path.chmod(0o400)
    assert same_master_key(MasterKey.from_file(path), MasterKey.from_hex(text, origin="test"))


def test_write_file_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        MasterKey.generate().write_file(tmp_path / "master.key")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "master.key").st_mode) == 0o600


def test_write_file_creates_an_owner_only_file_that_reads_back(tmp_path: Path) -> None:
    key = MasterKey.generate()
    path = tmp_path / "home" / "master.key"
    key.write_file(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text(encoding="ascii")
    assert len(text.strip()) == 64 and text.endswith("\n")
    assert same_master_key(MasterKey.from_file(path), key)


def test_write_file_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    first = MasterKey.generate()
    first.write_file(path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        MasterKey.generate().write_file(path)
    assert path.read_bytes() == before
    assert same_master_key(MasterKey.from_file(path), first)


# load_master_key -------------------------------------------------------------------------------------


@pytest.fixture
def key_files(tmp_path: Path, rng: random.Random) -> dict[str, tuple[Path, MasterKey]]:
    found = {}
    for name in ("env", "default"):
        key = MasterKey.from_hex(random_hex(rng, 32), origin="test")
        path = tmp_path / f"{name}.key"
        key.write_file(path)
        found[name] = (path, key)
    return found


KeyFiles = dict[str, tuple[Path, MasterKey]]


def test_load_prefers_the_hex_variable(key_files: KeyFiles, rng: random.Random) -> None:
    text = random_hex(rng, 32)
    loaded = load_master_key(text, key_files["env"][0], key_files["default"][0])
    assert same_master_key(loaded, MasterKey.from_hex(text, origin="test"))


def test_load_prefers_the_key_file_over_the_default(key_files: KeyFiles) -> None:
    for unset in (None, ""):
        loaded = load_master_key(unset, key_files["env"][0], key_files["default"][0])
        assert same_master_key(loaded, key_files["env"][1])
        assert not same_master_key(loaded, key_files["default"][1])


def test_load_falls_back_to_the_default_file(key_files: KeyFiles) -> None:
    loaded = load_master_key(None, None, key_files["default"][0])
    assert same_master_key(loaded, key_files["default"][1])


def test_load_does_not_fall_back_when_the_named_file_is_missing(key_files: KeyFiles, tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="does not exist"):
        load_master_key(None, tmp_path / "typo.key", key_files["default"][0])


def test_load_refuses_a_bad_hex_variable_naming_it(rng: random.Random, key_files: KeyFiles) -> None:
    text = random_hex(rng, 16)
    with pytest.raises(MasterKeyError, match="BACKUP_ENCRYPTION_KEY is refused") as caught:
        load_master_key(text, None, key_files["default"][0])
    assert text not in str(caught.value)


@pytest.mark.parametrize("default", ["missing", None])
def test_load_without_any_key_says_what_to_set(tmp_path: Path, default: str | None) -> None:
    default_file = tmp_path / "master.key" if default else None
    with pytest.raises(MasterKeyError, match="no master key") as caught:
        load_master_key(None, None, default_file)
    message = str(caught.value)
    assert "BACKUP_ENCRYPTION_KEY" in message and "BACKUP_ENCRYPTION_KEY_FILE" in message
    assert "equisplit-dr init" in message


# Keyring ----------------------------------------------------------------------------------------------


def test_keyring_seal_then_open_keeps_every_secret(master: MasterKey, rng: random.Random) -> None:
    ring = Keyring.create(random_hex(rng, 16))
    first = ring.current
    ring.add_data_key()
    envelope = first.seal(ObjectType.CHUNK, "c", b"sealed under the first key")
    opened = Keyring.open(ring.seal(master), master)
    assert opened.repository_id == ring.repository_id
    assert opened.id_key == ring.id_key and len(opened.id_key) == 32
    assert opened.chunker_seed == ring.chunker_seed and 0 <= opened.chunker_seed < 2**64
    assert opened.current_key_id == ring.current_key_id != first.key_id
    assert set(opened.data_keys) == set(ring.data_keys) and len(opened.data_keys) == 2
    assert opened.created == ring.created
    old_key = opened.key(first.key_id, "chunk c")
    assert old_key.open(envelope, ObjectType.CHUNK, "c") == b"sealed under the first key"


def test_keyring_object_is_the_documented_json(master: MasterKey, rng: random.Random) -> None:
    """docs/FORMAT.md section 2, checked with AESGCM directly."""
    ring = Keyring.create(random_hex(rng, 16))
    blob = ring.seal(master)
    doc = json.loads(blob)
    assert set(doc) == {"format", "version", "repository_id", "algorithm", "wrapped", "wrapped_at"}
    assert doc["format"] == KEYRING_FORMAT and doc["version"] == 1 and doc["algorithm"] == "AES-256-GCM"
    assert doc["repository_id"] == ring.repository_id
    wrapped = base64.b64decode(doc["wrapped"])
    master_bytes = bytes.fromhex(_hex_of(master))
    secret_json = AESGCM(master_bytes).decrypt(
        wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], KEYRING_AAD_PREFIX + ring.repository_id.encode()
    )
    assert len(wrapped) == NONCE_SIZE + len(secret_json) + TAG_SIZE
    secret = json.loads(secret_json)
    assert set(secret) == {"id_key", "chunker_seed", "data_keys", "current_key_id"}
    assert secret["id_key"] == ring.id_key.hex()
    assert secret["chunker_seed"] == ring.chunker_seed
    assert secret["current_key_id"] == ring.current_key_id.hex()
    assert [item["key_id"] for item in secret["data_keys"]] == [ring.current_key_id.hex()]
    assert set(secret["data_keys"][0]) == {"key_id", "key", "created_at"}


def _hex_of(master: MasterKey) -> str:
    """The master key's hex, recovered through write_file (the only way it leaves the object)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k"
        master.write_file(path)
        return path.read_text(encoding="ascii").strip()


def test_sealed_keyring_holds_no_secret_in_clear(master: MasterKey, rng: random.Random) -> None:
    ring = Keyring.create(random_hex(rng, 16))
    ring.add_data_key()
    blob = ring.seal(master)
    text = blob.decode("utf-8").lower()
    secrets_hex = [ring.id_key.hex(), *(raw.hex() for raw in ring._raw.values()), _hex_of(master)]
    for secret in secrets_hex:
        assert secret not in text
        assert secret[:16] not in text
        assert bytes.fromhex(secret) not in blob
    for raw in ring._raw.values():
        assert raw.hex() not in repr(ring)


def test_keyring_open_with_a_wrong_master_key(master: MasterKey, rng: random.Random) -> None:
    blob = Keyring.create(random_hex(rng, 16)).seal(master)
    with pytest.raises(WrongKeyError, match="wrong master key") as caught:
        Keyring.open(blob, MasterKey.from_hex(random_hex(rng, 32), origin="test"))
    assert caught.value.exit_code == 3


def test_keyring_cannot_be_moved_to_another_repository_id(master: MasterKey, rng: random.Random) -> None:
    doc = json.loads(Keyring.create(random_hex(rng, 16)).seal(master))
    doc["repository_id"] = random_hex(rng, 16)
    with pytest.raises(EquisplitError):
        Keyring.open(json.dumps(doc).encode(), master)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\xff\x00 not json",
        b"{}",
        b'{"format": "other"}',
        b'{"format": "equisplit-dr-keyring"}',
        b'{"format": "equisplit-dr-keyring", "repository_id": "x", "wrapped": 5}',
    ],
)
def test_keyring_open_refuses_what_is_not_a_keyring(master: MasterKey, blob: bytes) -> None:
    with pytest.raises(RepositoryError, match="not an equisplit-dr keyring"):
        Keyring.open(blob, master)


@pytest.mark.parametrize(
    "blob",
    [b"[]", b"null", b'{"format": "equisplit-dr-keyring", "repository_id": "x", "wrapped": ""}'],
)
def test_keyring_open_refuses_malformed_keyrings_with_a_domain_error(master: MasterKey, blob: bytes) -> None:
    with pytest.raises(EquisplitError):
        Keyring.open(blob, master)


def test_keyring_key_names_an_unknown_key_id(rng: random.Random) -> None:
    ring = Keyring.create(random_hex(rng, 16))
    unknown = rng.randbytes(16)
    with pytest.raises(RepositoryError, match=f"chunk c is sealed with data key {unknown.hex()}"):
        ring.key(unknown, "chunk c")
