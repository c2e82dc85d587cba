"""Sizes, magics and type ids of docs/FORMAT.md. A retired id is never reused."""

from __future__ import annotations

from enum import IntEnum

FORMAT_VERSION = 1

MAGIC = b"EQDR"
KEY_ID_SIZE = 16
NONCE_SIZE = 12
TAG_SIZE = 16
#: magic(4) || version(1) || type(1) || key id(16) || nonce(12)
ENVELOPE_HEADER = 4 + 1 + 1 + KEY_ID_SIZE + NONCE_SIZE
ENVELOPE_OVERHEAD = ENVELOPE_HEADER + TAG_SIZE
#: bytes of the header bound as associated data before the object id: magic, version, type, key id
AAD_HEADER = 4 + 1 + 1 + KEY_ID_SIZE

PACK_MAGIC = b"EQPK"
PACK_TRAILER = 4 + len(PACK_MAGIC)
PACK_INDEX_RECORD = 48
CHUNK_ID_SIZE = 32

KEYRING_FORMAT = "equisplit-dr-keyring"
KEYRING_AAD_PREFIX = b"equisplit-dr/keyring/v1/"


class ObjectType(IntEnum):
    CONFIG = 1
    CHUNK = 2
    PACK_INDEX = 3
    MANIFEST = 4
    WAL_SEGMENT = 5
    UNIT_RESULT = 6
    AUDIT_ANCHOR = 7
    #: The index of a cold-tier pack (docs/ARCHIVE.md): same layout as PACK_INDEX; the type says the tier.
    COLD_PACK_INDEX = 8


class Kind:
    """Storage kinds (docs/FORMAT.md section 1)."""

    KEYS = "keys"
    CONFIG = "config"
    PACKS = "packs"
    MANIFESTS = "manifests"
    UNITS = "units"
    AUDIT = "audit"
    WAL = "wal"


class Tier:
    """The tier of a pack and of the chunk copies it holds (docs/ARCHIVE.md). A backup of one tier
    dedups only against copies of its own tier; an archive backup's file chunks are cold."""

    STANDARD = "standard"
    COLD = "cold"


TIERS = (Tier.STANDARD, Tier.COLD)
#: The sealed index type of each tier's packs (docs/FORMAT.md section 5).
PACK_INDEX_TYPES = {Tier.STANDARD: ObjectType.PACK_INDEX, Tier.COLD: ObjectType.COLD_PACK_INDEX}


def tier_of(header: dict[str, object]) -> str:
    """The tier a manifest's header gives its file chunks; a header without one (written before tiers,
    archives included) is standard."""
    return Tier.COLD if header.get("tier") == Tier.COLD else Tier.STANDARD
