"""WAL objects (docs/WAL.md section 2): one envelope each, bound to source and name, verified on read;
and the page-header checks that refuse a file that is not what its name says."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from app.context import Context
from app.errors import IntegrityError, WalError
from app.repo.format import ENVELOPE_HEADER, ObjectType
from app.wal import names, segment
from tests.unit.wal.conftest import SEGMENT_SIZE, SOURCE, SYSID, make_segment

NAME = "000000010000000000000005"


def meta_for(ctx: Context, data: bytes, name: str = NAME) -> segment.WalMeta:
    return segment.WalMeta(
        source=SOURCE,
        name=name,
        kind="segment",
        size=len(data),
        hash=ctx.repository.chunk_ids.of(data),
        system_identifier=str(SYSID),
        segment_size=SEGMENT_SIZE,
        written_at=None,
        archived_at="2026-11-27T04:00:00.000000Z",
    )


def test_seal_then_open_returns_meta_and_data(ctx: Context) -> None:
    data = make_segment(5)
    sealed = segment.seal(ctx.repository, meta_for(ctx, data), data, 1)
    assert sealed[5] == ObjectType.WAL_SEGMENT == 5
    assert len(sealed) < len(data) // 10  # zstd: WAL-like data compresses well
    meta, opened = segment.open_object(ctx.repository, SOURCE, NAME, sealed)
    assert opened == data and meta == meta_for(ctx, data)


def test_the_layout_is_meta_length_meta_then_data(ctx: Context) -> None:
    data = make_segment(5)
    sealed = segment.seal(ctx.repository, meta_for(ctx, data), data, None)
    key = ctx.repository.keyring.current
    payload = key.open(sealed, ObjectType.WAL_SEGMENT, names.object_name(SOURCE, NAME))
    assert payload[0] == 0  # raw codec
    (length,) = struct.unpack_from("<I", payload, 1)
    assert payload[5 : 5 + length] == meta_for(ctx, data).to_bytes()
    assert payload[5 + length :] == data


@pytest.mark.parametrize(("source", "name"), [("db-2", NAME), (SOURCE, "000000010000000000000006")])
def test_an_object_read_under_another_source_or_name_fails(ctx: Context, source: str, name: str) -> None:
    data = make_segment(5)
    sealed = segment.seal(ctx.repository, meta_for(ctx, data), data, 1)
    with pytest.raises(IntegrityError, match="failed authentication"):
        segment.open_object(ctx.repository, source, name, sealed)


def test_a_flipped_byte_fails_and_names_the_segment(ctx: Context) -> None:
    data = make_segment(5)
    sealed = bytearray(segment.seal(ctx.repository, meta_for(ctx, data), data, 1))
    sealed[ENVELOPE_HEADER + 10] ^= 1
    with pytest.raises(IntegrityError, match=NAME):
        segment.open_object(ctx.repository, SOURCE, NAME, bytes(sealed))


def test_data_that_does_not_hash_to_its_meta_fails(ctx: Context) -> None:
    data = make_segment(5)
    wrong = dataclasses.replace(meta_for(ctx, data), hash="0" * 64)
    with pytest.raises(IntegrityError, match="does not hash"):
        segment.open_object(ctx.repository, SOURCE, NAME, segment.seal(ctx.repository, wrong, data, 1))


def test_the_page_header_gives_cluster_and_size() -> None:
    header = segment.read_page_header(make_segment(5))
    assert header == segment.PageHeader(SYSID, SEGMENT_SIZE, 5 * SEGMENT_SIZE)
    assert segment.read_page_header(b"\0" * 100) is None
    assert segment.read_page_header(b"short") is None


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (make_segment(5, address=4 * SEGMENT_SIZE), "not the segment its name says"),
        (make_segment(5, sysid=42), "system identifier 42"),
        (make_segment(5)[: SEGMENT_SIZE // 2], "not a segment size"),
    ],
)
def test_a_file_that_contradicts_its_name_or_cluster_is_refused(data: bytes, match: str) -> None:
    with pytest.raises(WalError, match=match):
        segment.check_page_header(names.parse(NAME), data, str(SYSID))


def test_history_files_are_not_checked_as_segments() -> None:
    assert segment.check_page_header(names.parse("00000002.history"), b"1\t0/3000000\treason\n", None) is None
