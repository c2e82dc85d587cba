"""docs/FORMAT.md and the code's constants say the same numbers: the tables are parsed, not copied."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest

from app.repo import codecs, format, manifest
from app.repo.chunker import ChunkerParams
from app.repo.codecs import Codec
from app.repo.format import ObjectType
from app.repo.jsondoc import dump_json
from app.repo.keys import MasterKey
from app.repo.pack import PackBuilder
from app.repo.repository import DEFAULT_PACK_TARGET, Repository
from app.restore import sparse
from app.sources import files
from app.storage.memory import MemoryStorage

DOC = Path(__file__).resolve().parents[3] / "docs" / "FORMAT.md"


def sections() -> dict[str, str]:
    """The doc's `## N. Title` sections, by their number."""
    found: dict[str, str] = {}
    for part in re.split(r"^## ", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)[1:]:
        title, _, body = part.partition("\n")
        number = title.split(".", 1)[0].strip()
        found[number] = body
    return found


def tables(text: str) -> list[list[list[str]]]:
    """Every markdown table in `text`: rows of cells (header row first, the `---` row dropped)."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def table_with(section: str, header: list[str]) -> list[list[str]]:
    """The body rows of the table in `section` whose header is `header`."""
    matching = [t[1:] for t in tables(sections()[section]) if t[0] == header]
    assert len(matching) == 1, f"section {section} has {len(matching)} tables headed {header}"
    return matching[0]


def unquote(cell: str) -> str:
    """`b"EQDR"` -> EQDR, `keys` -> keys."""
    return re.sub(r'^`?b?"?|"?`?$', "", cell)


def search(pattern: str, text: str) -> re.Match[str]:
    match = re.search(pattern, text, flags=re.DOTALL)
    assert match is not None, f"docs/FORMAT.md no longer says {pattern!r}"
    return match


def json_example(section: str) -> dict[str, object]:
    """The first JSON code block of a section."""
    doc: dict[str, object] = json.loads(search(r"```json\n(\{.*?\})\n```", sections()[section]).group(1))
    return doc


def envelope_rows() -> dict[str, tuple[str, str]]:
    """Envelope table: the first word of each field -> (offset, size)."""
    rows = table_with("3", ["offset", "size", "field"])
    return {re.split(r"[\s,]", field)[0]: (offset, size) for offset, size, field in rows}


def test_the_doc_is_found_and_is_version_1() -> None:
    first_line = DOC.read_text(encoding="utf-8").splitlines()[0]
    assert first_line == f"# Repository format, version {format.FORMAT_VERSION}"


def test_envelope_table_offsets_and_sizes_match_the_constants() -> None:
    rows = envelope_rows()
    assert list(rows) == ["magic", "format", "object", "key", "nonce", "AES-256-GCM", "GCM"]
    assert rows["magic"] == ("0", str(len(format.MAGIC)))
    assert rows["format"] == ("4", "1")
    assert rows["object"] == ("5", "1")
    assert rows["key"] == ("6", str(format.KEY_ID_SIZE))
    assert rows["nonce"] == (str(format.AAD_HEADER), str(format.NONCE_SIZE))
    assert rows["AES-256-GCM"] == (str(format.ENVELOPE_HEADER), "n")
    assert rows["GCM"] == (f"{format.ENVELOPE_HEADER}+n", str(format.TAG_SIZE))


def test_envelope_table_is_contiguous_and_sums_to_the_header() -> None:
    rows = table_with("3", ["offset", "size", "field"])
    fixed = [(int(offset), int(size)) for offset, size, _ in rows if size != "n" and "+" not in offset]
    position = 0
    for offset, size in fixed:
        assert offset == position, "envelope fields must follow one another"
        position += size
    assert position == format.ENVELOPE_HEADER == 34
    assert format.ENVELOPE_OVERHEAD == format.ENVELOPE_HEADER + format.TAG_SIZE == 50


def test_envelope_magic_and_version_cells() -> None:
    fields = {re.split(r"[\s,]", row[2])[0]: row[2] for row in table_with("3", ["offset", "size", "field"])}
    assert search(r'b"(\w+)"', fields["magic"]).group(1).encode() == format.MAGIC == b"EQDR"
    assert fields["format"].endswith(f"`{format.FORMAT_VERSION}`")


@pytest.mark.parametrize("name", ["ENVELOPE_HEADER", "ENVELOPE_OVERHEAD"])
def test_named_sizes_in_the_prose_match(name: str) -> None:
    stated = dict(re.findall(r"`(\w+) = (\d+)`", sections()["3"]))
    assert int(stated[name]) == getattr(format, name)


def test_associated_data_is_the_header_up_to_the_nonce() -> None:
    match = search(r"`header\[0:(\d+)\] \|\| ascii\(object_id\)`", sections()["3"])
    assert int(match.group(1)) == format.AAD_HEADER == format.ENVELOPE_HEADER - format.NONCE_SIZE


def test_type_ids_match_object_type() -> None:
    by_doc_name = {
        "config": ObjectType.CONFIG,
        "chunk blob": ObjectType.CHUNK,
        "pack index": ObjectType.PACK_INDEX,
        "manifest": ObjectType.MANIFEST,
        "wal segment": ObjectType.WAL_SEGMENT,
        "unit result": ObjectType.UNIT_RESULT,
        "audit anchor": ObjectType.AUDIT_ANCHOR,
        "cold pack index": ObjectType.COLD_PACK_INDEX,
    }
    rows = table_with("3", ["type id", "name", "object id"])
    documented = {name: int(type_id) for type_id, name, _ in rows}
    assert documented == {name: int(member) for name, member in by_doc_name.items()}
    assert sorted(documented.values()) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert set(ObjectType) == set(by_doc_name.values()), "every type in the code is documented"


def test_codec_ids_match_codec() -> None:
    rows = table_with("3", ["codec id", "name", "body"])
    documented = {name: int(codec_id) for codec_id, name, _ in rows}
    assert documented == {member.name.lower(): int(member) for member in Codec}
    assert documented == {"raw": 0, "zstd": 1}


def test_compression_probe_numbers_match_codecs() -> None:
    match = search(r"first (\d+) KiB do not shrink by at least (\d+) %", sections()["3"])
    assert int(match.group(1)) * 1024 == codecs.SAMPLE_SIZE
    assert int(match.group(2)) / 100 == pytest.approx(codecs.MIN_SAVING)


def test_index_record_table_matches_the_record_size() -> None:
    rows = table_with("5", ["offset", "size", "field"])
    position = 0
    for offset, size, _ in rows:
        assert int(offset) == position
        position += int(size)
    assert position == format.PACK_INDEX_RECORD == 48
    assert int(rows[0][1]) == format.CHUNK_ID_SIZE
    # the u64le/u32le words of the table are the widths of the fields
    widths = [int(m) // 8 for m in re.findall(r"u(\d+)le", " ".join(r[2] for r in rows))]
    assert widths == [int(size) for _, size, _ in rows[1:]]


def test_index_records_are_laid_out_as_the_table_says() -> None:
    builder = PackBuilder()
    builder.add("ab" * 32, b"x" * 300, 1234)
    builder.add("cd" * 32, b"y" * 70, 5)
    plain = builder.index_plaintext()
    assert len(plain) == 2 * format.PACK_INDEX_RECORD
    second = plain[format.PACK_INDEX_RECORD :]
    assert second[0:32] == bytes.fromhex("cd" * 32)
    assert struct.unpack("<Q", second[32:40]) == (300,)
    assert struct.unpack("<I", second[40:44]) == (70,)
    assert struct.unpack("<I", second[44:48]) == (5,)


def test_pack_layout_line_matches_trailer_and_magic() -> None:
    match = search(r'\|\| u(\d+)le\(len\(index\)\) \|\| b"(\w+)"', sections()["5"])
    assert match.group(2).encode() == format.PACK_MAGIC == b"EQPK"
    assert int(match.group(1)) // 8 + len(format.PACK_MAGIC) == format.PACK_TRAILER
    assert "last 8 bytes" in sections()["5"] and format.PACK_TRAILER == 8


def test_storage_kinds_table_matches_kind() -> None:
    rows = table_with("1", ["kind", "name", "content", "written"])
    documented = {unquote(row[0]) for row in rows}
    code = {v for k, v in vars(format.Kind).items() if not k.startswith("_")}
    assert documented == code == {"keys", "config", "packs", "manifests", "units", "wal", "audit"}


def test_keyring_names_match() -> None:
    text = sections()["2"]
    doc = json_example("2")
    assert doc["format"] == format.KEYRING_FORMAT
    assert doc["algorithm"] == "AES-256-GCM"
    prefix = search(r'associated data\s+`b"([^"]+)" \|\| ascii\(repository_id\)`', text)
    assert prefix.group(1).encode() == format.KEYRING_AAD_PREFIX


def test_config_example_matches_the_defaults_and_what_init_writes() -> None:
    doc = json_example("4")
    assert doc["version"] == format.FORMAT_VERSION
    assert doc["chunker"] == ChunkerParams().to_json()
    assert doc["pack_target_size"] == DEFAULT_PACK_TARGET
    repo = Repository.init(MemoryStorage(), MasterKey.generate())
    assert set(repo.config) == set(doc)
    assert repo.config["chunker"] == doc["chunker"]
    assert repo.config["chunk_id"] == doc["chunk_id"]
    assert repo.config["pack_target_size"] == doc["pack_target_size"]


def test_manifest_root_example_matches_the_version_2_constants() -> None:
    doc = json_example("6")
    assert doc["version"] == manifest.MANIFEST_VERSION == 2
    entries = doc["entries"]
    assert isinstance(entries, dict) and set(entries) == {"format", "count", "bytes", "chunks"}
    assert entries["format"] == manifest.ENTRIES_FORMAT
    (chunk,) = entries["chunks"]
    located = manifest.ManifestChunk.from_json(chunk)
    assert located.to_json() == chunk and located.raw_length == entries["bytes"]


def test_manifest_chunker_table_matches_the_constant() -> None:
    rows = table_with("6", ["parameter", "value"])
    documented = {name: int(value) for name, value in rows}
    params = manifest.MANIFEST_CHUNKER.to_json()
    assert documented == {name: params[name] for name in documented}
    assert set(documented) == {"min_size", "avg_size", "max_size", "normalization"}
    assert params["algorithm"] in sections()["6"]


def test_manifest_read_coalescing_numbers_match() -> None:
    match = search(r"less than (\d+) MiB apart into one ranged read of\s+at most (\d+) MiB", sections()["6"])
    assert int(match.group(1)) << 20 == manifest.READ_GAP
    assert int(match.group(2)) << 20 == manifest.READ_LIMIT


def test_entry_types_table_matches_the_code() -> None:
    rows = table_with("6", ["type", "what", "fields beyond path, type, mode, uid, gid, mtime_ns"])
    names = [row[0].strip("`") for row in rows]
    assert names == list(files.ENTRY_TYPES)
    assert {name for name, row in zip(names, rows, strict=True) if "`rdev`" in row[2]} == set(files.DEVICE_TYPES)
    assert "`.` is the source root" in rows[names.index("dir")][1]
    assert files.ROOT_PATH == "."


def test_entry_examples_are_what_the_code_writes() -> None:
    """Each example line of section 6 survives a round trip through the code's Entry, byte for byte:
    the keys, their order and which type carries which field match."""
    block = search(r"\*\*Entries\.\*\*[^`]*```\n(.*?)\n```", sections()["6"]).group(1)
    lines = block.splitlines()
    assert {json.loads(line)["type"] for line in lines} == set(files.ENTRY_TYPES) - {"blockdev"}
    for line in lines:
        assert dump_json(files.Entry.from_json(json.loads(line)).to_json()).decode() == line


def test_sparse_block_matches_the_doc() -> None:
    match = search(r"`SPARSE_BLOCK` = (\d+) bytes", sections()["6"])
    assert int(match.group(1)) == sparse.SPARSE_BLOCK
