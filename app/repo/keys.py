"""The master key and the keyring (docs/FORMAT.md section 2): data keys and the id key, wrapped under
the master key. Nothing here logs or prints key material."""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.errors import MasterKeyError, RepositoryError, WrongKeyError
from app.repo.crypto import DataKey
from app.repo.format import KEY_ID_SIZE, KEYRING_AAD_PREFIX, KEYRING_FORMAT, NONCE_SIZE

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


class MasterKey:
    """256 bits that wrap the keyring. `repr` and `str` never show them."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "MasterKey(<hidden>)"

    @classmethod
    def from_hex(cls, text: str, *, origin: str) -> MasterKey:
        """Parse 64 hex characters; refuse anything else, naming `origin` and never the value."""
        value = text.strip()
        if not _HEX64.match(value):
            bits = len(value) * 4 if re.fullmatch(r"[0-9a-fA-F]*", value) else None
            why = (
                f"it is {len(value)} hex characters ({bits} bits); AES-256 needs 64 hex characters (256 bits)"
                if bits is not None
                else "it is not hexadecimal"
            )
            raise MasterKeyError(
                f"the master key from {origin} is refused: {why}",
                hint='generate one with: python3 -c "import secrets; print(secrets.token_hex(32))"',
            )
        return cls(bytes.fromhex(value))

    @classmethod
    def from_file(cls, path: Path) -> MasterKey:
        """Read a key file; refuse one that its group or others may access, as ssh does."""
        try:
            with open(path, "rb") as handle:
                check_key_file_mode(path, os.fstat(handle.fileno()).st_mode)
                text = handle.read().decode("ascii")
        except FileNotFoundError:
            raise MasterKeyError(
                f"master key file {path} does not exist",
                hint="set BACKUP_ENCRYPTION_KEY_FILE to the key file, or run `equisplit-dr init`",
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise MasterKeyError(f"master key file {path} cannot be read: {exc.__class__.__name__}") from None
        return cls.from_hex(text, origin=f"file {path}")

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(32))

    def write_file(self, path: Path) -> None:
        """Write the key as hex to a new file readable by its owner only; never overwrite one. Durable
        when it returns: the file and its directory entry are synced."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            os.fchmod(handle.fileno(), stat.S_IRUSR | stat.S_IWUSR)  # whatever the umask
            handle.write(self._key.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        fsync_dir(path.parent)

    def same_as(self, other: MasterKey) -> bool:
        return hmac.compare_digest(self._key, other._key)

    def _aead(self) -> AESGCM:
        return AESGCM(self._key)

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aead().encrypt(nonce, plaintext, aad)

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        try:
            return self._aead().decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
        except InvalidTag:
            raise WrongKeyError(
                "wrong master key: it does not open this repository's keyring",
                hint="use the key the repository was created (or last rotated) with; "
                "nothing was read or written",
            ) from None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Keyring:
    """The repository's secret material, in memory only."""

    repository_id: str
    id_key: bytes
    chunker_seed: int
    data_keys: dict[bytes, DataKey]
    current_key_id: bytes
    created: dict[bytes, str] = field(default_factory=dict)
    _raw: dict[bytes, bytes] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        return f"Keyring(repository_id={self.repository_id!r}, data_keys={len(self.data_keys)})"

    @classmethod
    def create(cls, repository_id: str) -> Keyring:
        ring = cls(repository_id, secrets.token_bytes(32), secrets.randbits(63), {}, b"")
        ring.add_data_key()
        return ring

    @property
    def current(self) -> DataKey:
        return self.data_keys[self.current_key_id]

    def add_data_key(self) -> DataKey:
        key_id, key = secrets.token_bytes(KEY_ID_SIZE), secrets.token_bytes(32)
        self._raw[key_id] = key
        self.data_keys[key_id] = DataKey(key_id, key)
        self.created[key_id] = _now()
        self.current_key_id = key_id
        return self.data_keys[key_id]

    def drop_data_key(self, key_id: bytes, *, current: bytes) -> None:
        """Forget a data key that was never stored, making `current` current again."""
        self._raw.pop(key_id, None)
        self.data_keys.pop(key_id, None)
        self.created.pop(key_id, None)
        self.current_key_id = current

    def key(self, key_id: bytes, what: str) -> DataKey:
        try:
            return self.data_keys[key_id]
        except KeyError:
            raise RepositoryError(
                f"{what} is sealed with data key {key_id.hex()}, which this keyring does not hold",
                hint="the keyring may have been replaced by an older copy; restore keys/keyring",
            ) from None

    def seal(self, master: MasterKey, *, new_key_origin: str | None = None) -> bytes:
        """The keyring object's bytes, wrapped under `master`; `new_key_origin` (where a rotation keeps
        its new master key, never the key) marks a pending rotation's `keys/keyring.next`."""
        secret = {
            "id_key": self.id_key.hex(),
            "chunker_seed": self.chunker_seed,
            "data_keys": [
                {"key_id": kid.hex(), "key": raw.hex(), "created_at": self.created.get(kid, "")}
                for kid, raw in self._raw.items()
            ],
            "current_key_id": self.current_key_id.hex(),
        }
        wrapped = master.wrap(json.dumps(secret).encode(), KEYRING_AAD_PREFIX + self.repository_id.encode())
        doc = {
            "format": KEYRING_FORMAT,
            "version": 1,
            "repository_id": self.repository_id,
            "algorithm": "AES-256-GCM",
            "wrapped": base64.b64encode(wrapped).decode("ascii"),
            "wrapped_at": _now(),
        }
        if new_key_origin is not None:
            doc["new_key"] = new_key_origin
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def open(cls, blob: bytes, master: MasterKey) -> Keyring:
        """Unwrap a keyring object; WrongKeyError if `master` is not the key it was wrapped under."""
        try:
            doc = json.loads(blob)
            if not isinstance(doc, dict) or doc.get("format") != KEYRING_FORMAT:
                raise ValueError("not a keyring")
            repository_id = str(doc["repository_id"])
            wrapped = base64.b64decode(doc["wrapped"], validate=True)
            if len(wrapped) < NONCE_SIZE + 16:
                raise ValueError("wrapped keys are truncated")
        except (ValueError, KeyError, TypeError):
            raise RepositoryError(
                "keys/keyring is not an equisplit-dr keyring", hint="check BACKUP_STORAGE_URL"
            ) from None
        secret = json.loads(master.unwrap(wrapped, KEYRING_AAD_PREFIX + repository_id.encode()))
        ring = cls(
            repository_id,
            bytes.fromhex(secret["id_key"]),
            int(secret["chunker_seed"]),
            {},
            bytes.fromhex(secret["current_key_id"]),
        )
        for item in secret["data_keys"]:
            kid, raw = bytes.fromhex(item["key_id"]), bytes.fromhex(item["key"])
            ring._raw[kid] = raw
            ring.data_keys[kid] = DataKey(kid, raw)
            ring.created[kid] = item.get("created_at", "")
        return ring


def check_key_file_mode(path: Path, mode: int) -> None:
    """MasterKeyError if group or others have any access to the key file `path` (mode `mode`)."""
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MasterKeyError(
            f"master key file {path} is accessible by its group or others "
            f"(mode {stat.S_IMODE(mode):04o}): refused, as the key would be readable by other users",
            hint=f"chmod 600 {path}",
        )


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_master_key(key_hex: str | None, key_file: Path | None, default_file: Path | None) -> MasterKey:
    """The master key from BACKUP_ENCRYPTION_KEY, else BACKUP_ENCRYPTION_KEY_FILE, else the default file."""
    if key_hex:
        return MasterKey.from_hex(key_hex, origin="BACKUP_ENCRYPTION_KEY")
    if key_file is not None:
        return MasterKey.from_file(key_file)
    if default_file is not None and default_file.exists():
        return MasterKey.from_file(default_file)
    raise MasterKeyError(
        "no master key: BACKUP_ENCRYPTION_KEY and BACKUP_ENCRYPTION_KEY_FILE are unset",
        hint="set one of them, or run `equisplit-dr init` to generate a key file in EQUISPLIT_DR_HOME",
    )
