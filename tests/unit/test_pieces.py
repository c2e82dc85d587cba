"""Big files in pieces: where they are cut, and how the pieces join back into one manifest entry."""

from __future__ import annotations

from app.backup.pieces import CHANGED, merge_pieces
from app.backup.plan import items_of, split_units
from app.sources.files import Entry

MiB = 1 << 20


def _file(path: str, size: int) -> Entry:
    return Entry(
        path=path, type="file", mode=0o644, uid=0, gid=0, mtime_ns=10, size=size, ctime_ns=10, inode=1
    )


def test_a_big_file_is_cut_at_fixed_offsets_and_the_last_piece_reads_to_its_end() -> None:
    items = items_of(_file("big", 5 * MiB + 10), 2 * MiB)
    assert [(i.offset, i.length) for i in items] == [(0, 2 * MiB), (2 * MiB, 2 * MiB), (4 * MiB, None)]
    assert [i.size for i in items] == [2 * MiB, 2 * MiB, MiB + 10]
    assert items_of(_file("small", 2 * MiB), 2 * MiB)[0].is_piece is False
    units = split_units([_file("a", MiB), _file("big", 5 * MiB + 10)], 2 * MiB, 2 * MiB)
    assert [[(i.entry.path, i.offset) for i in u.items] for u in units] == [
        [("a", 0)],
        [("big", 0)],
        [("big", 2 * MiB)],
        [("big", 4 * MiB)],
    ]
    assert units[1].items[0].to_json()["piece"] == {"offset": 0, "length": 2 * MiB}


def _piece(offset: int, read: int, chunks: list[str], mtime: int = 10) -> dict[str, object]:
    return {
        "path": "big",
        "type": "file",
        "size": 99,
        "mtime_ns": mtime,
        "ctime_ns": mtime,
        "chunks": chunks,
        "piece": {"offset": offset, "read": read},
    }


def test_pieces_join_in_offset_order_into_one_entry() -> None:
    warnings: list[dict[str, str]] = []
    merged = merge_pieces(
        [_piece(4, 2, ["c"]), {"path": "a", "type": "file", "chunks": ["x"]}, _piece(0, 4, ["a", "b"])],
        [],
        warnings,
    )
    [big] = [e for e in merged if e["path"] == "big"]
    assert big["chunks"] == ["a", "b", "c"] and big["size"] == 6 and "piece" not in big
    assert warnings == []


def test_pieces_that_disagree_are_kept_with_a_warning_and_an_unreadable_piece_drops_the_file() -> None:
    warnings: list[dict[str, str]] = []
    merged = merge_pieces([_piece(0, 4, ["a"], mtime=10), _piece(4, 2, ["b"], mtime=20)], [], warnings)
    assert merged[0]["mtime_ns"] == 10  # the oldest: the next backup re-reads the file
    assert warnings == [{"path": "big", "warning": CHANGED}]
    quiet: list[dict[str, str]] = []
    merge_pieces([_piece(0, 4, ["a"]), _piece(5, 2, ["b"])], [], quiet, expect_changes=True)
    assert quiet == []  # PostgreSQL: WAL replay repairs it
    errors = [{"path": "big", "error": "Permission denied"}, {"path": "big", "error": "Permission denied"}]
    assert merge_pieces([_piece(0, 4, ["a"])], errors, []) == []
    assert errors == [{"path": "big", "error": "Permission denied"}]


def test_a_big_file_is_restored_in_pieces_of_whole_chunks() -> None:
    from app.catalog.chunks import ChunkLocation
    from app.restore.procpool import shares, split_big

    where = {f"c{i}": ChunkLocation("p1", i * 100, 100, MiB) for i in range(5)}
    where["s"] = ChunkLocation("p0", 0, 10, 10)
    big = {"path": "big", "type": "file", "size": 5 * MiB, "chunks": [f"c{i}" for i in range(5)]}
    small = {"path": "s", "type": "file", "size": 10, "chunks": ["s"]}
    items, bigs = split_big([small, big], where, 2 * MiB)
    assert bigs == [big]
    assert [i.get("piece") for i in items] == [
        None,
        {"first": 0, "count": 2, "offset": 0, "bytes": 2 * MiB},
        {"first": 2, "count": 2, "offset": 2 * MiB, "bytes": 2 * MiB},
        {"first": 4, "count": 1, "offset": 4 * MiB, "bytes": MiB},
    ]
    runs = shares(items, where, 2)
    assert sum(len(r) for r in runs) == 4 and len(runs) == 2  # the pieces go to both runs
