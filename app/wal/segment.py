"""One archived WAL file as an object (docs/WAL.md section 2, FORMAT.md section 9): its meta, sealing,
opening and verification; and what the first page of a segment says about its cluster."""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass
from typing import Any

from app.errors import IntegrityError, WalError
from app.repo import codecs
from app.repo.crypto import check_header, describe, envelope_key_id
from app.repo.format import Kind, ObjectType
from app.repo.repository import Repository
from app.wal import names

META_VERSION = 1
#: plaintext = u32le(len(meta)) || meta || data
META_LENGTH = struct.Struct("<I")
MAX_META = 64 * 1024

#: XLogLongPageHeaderData (PostgreSQL, little-endian hosts): magic u16, info u16, timeline u32,
#: page address u64, remaining length u32 (+ 4 bytes of alignment), system identifier u64, segment size
#: u32, block size u32.
LONG_PAGE_HEADER = struct.Struct("<HHIQI4xQII")
XLP_LONG_HEADER = 0x0002


@dataclass(frozen=True)
class PageHeader:
    """What the long header of a segment's first page says."""

    system_identifier: int
    segment_size: int
    page_address: int


def read_page_header(data: bytes) -> PageHeader | None:
    """The long page header at the start of `data`, or None if it does not look like one."""
    if len(data) < LONG_PAGE_HEADER.size:
        return None
    _magic, info, _tli, address, _rem, sysid, seg_size, block = LONG_PAGE_HEADER.unpack_from(data)
    if not info & XLP_LONG_HEADER or not names.is_segment_size(seg_size):
        return None
    if block < 1024 or block > 65536 or block & (block - 1):
        return None
    return PageHeader(sysid, seg_size, address)


@dataclass(frozen=True)
class WalMeta:
    """The meta at the head of a WAL object's plaintext."""

    source: str
    name: str
    kind: str
    size: int
    hash: str
    system_identifier: str | None
    segment_size: int | None
    written_at: str | None
    archived_at: str
    version: int = META_VERSION

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes, what: str) -> WalMeta:
        try:
            doc: dict[str, Any] = json.loads(raw)
            if doc.get("version") != META_VERSION:
                raise IntegrityError(
                    f"{what} has meta version {doc.get('version')}; this build reads {META_VERSION}",
                    hint="upgrade equisplit-dr",
                )
            return cls(**{key: doc[key] for key in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"{what}: its meta is malformed") from None


def describe_object(source: str, name: str) -> str:
    """How messages name a WAL object."""
    return f"WAL file {name} of source {source} (object {Kind.WAL}/{names.object_name(source, name)})"


def seal(repo: Repository, meta: WalMeta, data: bytes, level: int | None) -> bytes:
    """The envelope of one WAL file: type 5, the object name bound as associated data."""
    meta_bytes = meta.to_bytes()
    payload = codecs.encode_parts((META_LENGTH.pack(len(meta_bytes)) + meta_bytes, data), level)
    object_id = names.object_name(meta.source, meta.name)
    return repo.keyring.current.seal(ObjectType.WAL_SEGMENT, object_id, payload)


def open_object(repo: Repository, source: str, name: str, sealed: bytes) -> tuple[WalMeta, bytes]:
    """Meta and data of a sealed WAL object, checked as docs/WAL.md section 2 requires."""
    object_id = names.object_name(source, name)
    what = describe_object(source, name)
    check_header(sealed, ObjectType.WAL_SEGMENT, object_id)
    key = repo.keyring.key(envelope_key_id(sealed), describe(ObjectType.WAL_SEGMENT, object_id))
    payload = key.open(sealed, ObjectType.WAL_SEGMENT, object_id)
    plaintext = codecs.decode(payload, what, names.MAX_SEGMENT_SIZE + MAX_META + META_LENGTH.size)
    if len(plaintext) < META_LENGTH.size:
        raise IntegrityError(f"{what} is truncated")
    (meta_length,) = META_LENGTH.unpack_from(plaintext)
    if meta_length > MAX_META or META_LENGTH.size + meta_length > len(plaintext):
        raise IntegrityError(f"{what}: its meta length {meta_length} is impossible")
    meta = WalMeta.from_bytes(plaintext[META_LENGTH.size : META_LENGTH.size + meta_length], what)
    data = plaintext[META_LENGTH.size + meta_length :]
    if meta.source != source or meta.name != name:
        raise IntegrityError(f"{what} holds WAL file {meta.name} of source {meta.source}")
    if len(data) != meta.size:
        raise IntegrityError(f"{what} holds {len(data)} bytes; its meta says {meta.size}")
    if repo.chunk_ids.of(data) != meta.hash:
        raise IntegrityError(f"{what} does not hash to the content hash in its meta")
    return meta, data


def read(repo: Repository, source: str, name: str) -> tuple[WalMeta, bytes]:
    """The verified meta and data of an archived WAL file; ObjectNotFoundError if it is not stored."""
    sealed = repo.storage.get(Kind.WAL, names.object_name(source, name))
    return open_object(repo, source, name, sealed)


def check_page_header(name: names.WalName, data: bytes, system_identifier: str | None) -> PageHeader | None:
    """For a segment or partial segment: refuse a file whose first page contradicts its name or the
    source's cluster. Returns the header (None for other kinds, or if the page is not a long header)."""
    if name.kind not in (names.SEGMENT, names.PARTIAL):
        return None
    header = read_page_header(data)
    if name.is_segment and not names.is_segment_size(len(data)):
        raise WalError(
            f"WAL segment {name.name} is {len(data)} bytes, not a segment size",
            hint="archive_command must be given the file PostgreSQL names in %p",
        )
    if header is None:
        return None
    if name.is_segment and header.segment_size != len(data):
        raise WalError(f"WAL segment {name.name} is {len(data)} bytes; its header says {header.segment_size}")
    segno = name.segno(header.segment_size)
    if segno is not None and header.page_address != segno * header.segment_size:
        raise WalError(
            f"file {name.name} holds WAL from position {header.page_address:X}, "
            f"not the segment its name says",
            hint="archive_command must be given PostgreSQL's own %p, not a renamed copy",
        )
    if system_identifier is not None and str(header.system_identifier) != system_identifier:
        raise WalError(
            f"WAL file {name.name} comes from the cluster with system identifier {header.system_identifier}; "
            f"this source archives the cluster {system_identifier}",
            hint="a second or re-initialised cluster is archiving into this source: register it as its "
            "own source (`equisplit-dr source add NAME --postgres DSN`) and point its archive_command there",
        )
    return header
