"""A cluster's plan: units that shrink toward the end, sent biggest first, so no worker waits long for
the last one (app/backup/plan.py, guided self-scheduling)."""

from __future__ import annotations

import random

from app.backup.plan import GUIDED_MIN_BYTES, ITEM_COST_BYTES, split_units
from app.sources.files import Entry

MiB = 1 << 20


def _file(path: str, size: int) -> Entry:
    return Entry(
        path=path, type="file", mode=0o644, uid=0, gid=0, mtime_ns=10, size=size, ctime_ns=10, inode=1
    )


def _tree() -> list[Entry]:
    rng = random.Random(7)
    files = [_file(f"small/{i:05d}", rng.randint(1024, 9 * 1024)) for i in range(4000)]
    files += [_file(f"text/{i:03d}.csv", rng.randint(MiB, 6 * MiB)) for i in range(40)]
    files += [_file(f"vm/{i}.img", rng.randint(40 * MiB, 120 * MiB)) for i in range(4)]  # last in path order
    return files


def _cost(unit: object) -> int:
    return unit.bytes + ITEM_COST_BYTES * len(unit.items)  # type: ignore[attr-defined]


def test_guided_units_shrink_toward_the_end_and_are_numbered_biggest_first() -> None:
    files = _tree()
    units = split_units(files, 64 * MiB, guided=True)
    costs = [_cost(u) for u in units]
    assert [u.number for u in units] == list(range(len(units)))
    assert costs == sorted(costs, reverse=True)
    assert costs[0] <= 64 * MiB
    # the last units are small although the big files come last in path order: they went first
    assert max(costs[-3:]) <= GUIDED_MIN_BYTES
    assert units[0].items[0].is_piece and units[0].items[0].entry.path.startswith("vm/")
    flat = split_units(files, 64 * MiB)
    assert min(_cost(u) for u in flat[-1:]) > max(costs[-3:])


def test_guided_units_hold_every_item_once() -> None:
    files = _tree()
    units = split_units(files, 64 * MiB, guided=True)
    items = sorted((i.entry.path, i.offset) for u in units for i in u.items)
    flat = sorted((i.entry.path, i.offset) for u in split_units(files, 64 * MiB) for i in u.items)
    assert items == flat
    assert len(items) == len(set(items))
    assert sum(u.bytes for u in units) == sum(f.size for f in files)


def test_a_small_plan_is_not_cut_below_the_minimum_unit() -> None:
    files = [_file(f"f{i}", 100 * 1024) for i in range(30)]  # 3 MiB in all
    units = split_units(files, 64 * MiB, guided=True)
    assert len(units) == 1 and len(units[0].items) == 30
