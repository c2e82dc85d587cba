"""Deterministic benchmark tree: ~1 GiB of mixed data at --scale 1.0, and a ~2 % mutation of it.

    python bench/gen_tree.py generate DIR [--scale 1.0] [--seed 1]
    python bench/gen_tree.py mutate DIR [--seed 1] [--fraction 0.02]

Mix at any scale (by bytes):
  * 40 % compressible text: CSV exports, JSON-lines event streams and service logs (files of 16 KiB to
    16 MiB, log-uniform), built from pools of fields so zstd finds realistic (not absurd) redundancy;
  * 40 % incompressible bytes (random) in files of 1 to 128 MiB (log-uniform, clipped to the budget);
  * 20 % in small files of 1 to 9 KiB (40,000 at scale 1.0), half small text documents, half random.

Every byte comes from `random.Random` seeded with the seed and the file's path, so the same seed gives the
same tree byte for byte (and the same mutation). Generated files and directories get mtimes on
2025-01-01, so a backup tool's change detection sees old files; ctimes cannot be faked, so a benchmark
must start its first backup a few seconds after generating (bench/run.py waits).
"""

from __future__ import annotations

import argparse
import itertools
import math
import operator
import os
import random
import sys
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

KiB = 1024
MiB = 1024 * 1024
GiB = 1024 * MiB
FULL_SIZE = 1 * GiB

TEXT_SHARE, BINARY_SHARE, SMALL_SHARE = 0.40, 0.40, 0.20
SMALL_FILES_AT_FULL = 40_000
SMALL_MIN, SMALL_MAX = 1 * KiB, 9 * KiB
TEXT_MIN, TEXT_MAX = 16 * KiB, 16 * MiB
BIN_MIN, BIN_MAX = 1 * MiB, 128 * MiB
FILES_PER_DIR = 100

#: 2025-01-01T00:00:00Z: generated files look old to change detection.
BASE_MTIME = 1_735_689_600


_POOL_CACHE: dict[int, list[str]] = {}


def _rng(seed: int, *parts: object) -> random.Random:
    return random.Random(":".join([str(seed), *map(str, parts)]))


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


# --- text ------------------------------------------------------------------------------------------


class TextPools:
    """Pools of field values, built once per seed; rows are sampled from them column by column."""

    def __init__(self, seed: int) -> None:
        rng = _rng(seed, "pools")
        syll = ["ka", "lo", "mi", "ra", "zu", "ne", "to", "shi", "va", "de", "an", "or", "el", "bu", "fi",
                "go"]

        def word(n: int) -> str:
            return "".join(rng.choice(syll) for _ in range(n))

        self.names = [f"{word(2).title()} {word(3).title()}" for _ in range(5000)]
        self.users = [word(rng.randint(2, 4)) for _ in range(3000)]
        self.countries = ["DE", "FR", "US", "GB", "ES", "IT", "NL", "SE", "PL", "JP", "BR", "IN", "CA", "AU"]
        self.products = [f"{word(2)}-{rng.randint(100, 9999)}" for _ in range(2000)]
        self.prices = [f"{rng.uniform(0.5, 2500):.2f}" for _ in range(20000)]
        self.qty = [str(i) for i in range(1, 50)]
        self.status = ["paid", "paid", "paid", "shipped", "shipped", "refunded", "pending", "cancelled"]
        self.hex8 = rng.randbytes(4 * 50000).hex()
        self.hex8 = [self.hex8[i : i + 8] for i in range(0, len(self.hex8), 8)]
        self.numbers = [str(rng.randint(0, 99999)) for _ in range(20000)]
        self.ms = [str(int(rng.expovariate(1 / 40)) + 1) for _ in range(5000)]
        self.paths = [f"/api/v{rng.randint(1, 3)}/{word(2)}/{rng.randint(1, 5000)}" for _ in range(4000)]
        self.pages = [f"/{word(2)}/{word(3)}" for _ in range(1500)]
        self.events = ["view", "view", "view", "click", "click", "scroll", "add_to_cart", "purchase", "login"]
        self.tags = [f'["{word(2)}","{word(2)}"]' for _ in range(800)]
        self.levels = ["INFO"] * 12 + ["DEBUG"] * 6 + ["WARN"] * 2 + ["ERROR"]
        self.components = [f"{word(2)}-{rng.randint(1, 12)}" for _ in range(60)]
        self.methods = ["GET"] * 6 + ["POST"] * 3 + ["PUT", "DELETE"]
        self.codes = ["200"] * 20 + ["201", "204", "301", "400", "401", "403", "404", "404", "500", "503"]
        self.messages = [
            " ".join(word(rng.randint(1, 4)) for _ in range(rng.randint(3, 12))) for _ in range(1500)
        ]
        self.tods = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]
        first_day = BASE_MTIME - 400 * 86400
        self.days = [time.strftime("%Y-%m-%d", time.gmtime(first_day + d * 86400)) for d in range(800)]

    @staticmethod
    def _pick(rng: random.Random, pool: list[str], n: int) -> tuple[str, ...]:
        """`n` values drawn from `pool` (about uniformly): 16-bit random indices into the pool repeated to
        65,536 entries, looked up in C by itemgetter; several times faster than `rng.choices`."""
        table = _POOL_CACHE.get(id(pool))
        if table is None:
            table = _POOL_CACHE[id(pool)] = [pool[i % len(pool)] for i in range(65536)]
        picked = operator.itemgetter(*array("H", rng.randbytes(2 * n)))(table)
        return picked if n > 1 else (picked,)

    def _timestamps(self, rng: random.Random, n: int, step: int) -> list[str]:
        start = rng.randrange(0, 300 * 86400)
        steps = rng.randbytes(n).translate(bytes(b % (step + 1) for b in range(256)))
        days, tods = self.days, self.tods
        ticks = itertools.accumulate(steps, initial=start)
        return [f"{days[t // 86400]}T{tods[t % 86400]}" for t in ticks][:n]

    def csv_rows(self, rng: random.Random, n: int, first_id: int) -> Iterator[str]:
        p = self._pick
        cols = (map(str, range(first_id, first_id + n)), self._timestamps(rng, n, 30), p(rng, self.names, n),
                p(rng, self.countries, n), p(rng, self.products, n), p(rng, self.qty, n),
                p(rng, self.prices, n), p(rng, self.status, n))
        return map(",".join, zip(*cols, strict=True))

    def jsonl_rows(self, rng: random.Random, n: int, first_id: int) -> Iterator[str]:
        p = self._pick
        rows = zip(self._timestamps(rng, n, 3), p(rng, self.events, n), p(rng, self.numbers, n),
                   p(rng, self.hex8, n), p(rng, self.hex8, n), p(rng, self.pages, n), p(rng, self.ms, n),
                   p(rng, self.tags, n), p(rng, self.countries, n), strict=True)
        return (f'{{"ts":"{ts}Z","event":"{ev}","user_id":{uid},"session":"{s1}{s2}","page":"{pg}",'
                f'"duration_ms":{ms},"tags":{tg},"country":"{co}"}}'
                for ts, ev, uid, s1, s2, pg, ms, tg, co in rows)

    def log_rows(self, rng: random.Random, n: int, first_id: int) -> Iterator[str]:
        p = self._pick
        rows = zip(self._timestamps(rng, n, 2), p(rng, self.ms, n), p(rng, self.levels, n),
                   p(rng, self.components, n), p(rng, self.hex8, n), p(rng, self.methods, n),
                   p(rng, self.paths, n), p(rng, self.codes, n), p(rng, self.users, n),
                   p(rng, self.messages, n), strict=True)
        return (f"{ts}.{ms.zfill(3)[-3:]}Z {lv} [{co}] rid={rid} {me} {pa} {code} {ms}ms user={us} {msg}"
                for ts, ms, lv, co, rid, me, pa, code, us, msg in rows)

    def text(self, kind: str, rng: random.Random, size: int, first_id: int = 1) -> bytes:
        """About `size` bytes (whole lines, cut to exactly `size`) of `kind` text."""
        row_len = {"csv": 75, "jsonl": 190, "log": 125}[kind]
        rows = {"csv": self.csv_rows, "jsonl": self.jsonl_rows, "log": self.log_rows}[kind]
        out = bytearray()
        if kind == "csv" and first_id == 1:
            out += b"order_id,ordered_at,customer,country,product,qty,price,status\n"
        while len(out) < size:
            n = max(16, (size - len(out)) // row_len + 16)
            out += "\n".join(rows(rng, n, first_id)).encode() + b"\n"
            first_id += n
        del out[size:]
        if size:
            out[-1:] = b"\n"
        return bytes(out)


# --- generation ------------------------------------------------------------------------------------


@dataclass
class TreeStats:
    files: int = 0
    bytes: int = 0
    by_class: dict[str, list[int]] = field(default_factory=lambda: {"text": [0, 0], "binary": [0, 0],
                                                                     "small": [0, 0]})

    def add(self, cls: str, size: int) -> None:
        self.files += 1
        self.bytes += size
        self.by_class[cls][0] += 1
        self.by_class[cls][1] += size


def _write(path: Path, data: bytes, mtime: int | None) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def _plan_sizes(rng: random.Random, budget: int, low: int, high: int) -> list[int]:
    sizes: list[int] = []
    while budget > 0:
        size = min(_log_uniform(rng, low, high), budget)
        if size < low and sizes:
            sizes[-1] += size
            break
        sizes.append(size)
        budget -= size
    return sizes


def generate(root: Path, scale: float = 1.0, seed: int = 1, log: Callable[[str], None] = print) -> TreeStats:
    """Write the tree under `root` (which must not exist or be empty)."""
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise SystemExit(f"{root} is not empty")
    total = int(FULL_SIZE * scale)
    pools = TextPools(seed)
    stats = TreeStats()
    started = time.monotonic()
    mtime = itertools.count(BASE_MTIME, 7)

    # text: round-robin over the three kinds
    rng = _rng(seed, "text-sizes")
    kinds = [("csv", "text/csv/export_{:04d}.csv"), ("jsonl", "text/jsonl/events_{:04d}.jsonl"),
             ("log", "text/logs/service_{:04d}.log")]
    budget = int(total * TEXT_SHARE)
    # a small tree keeps the mix: no file takes more than a twelfth of its class's budget
    largest = max(2 * TEXT_MIN, min(TEXT_MAX, budget // 12))
    for i, size in enumerate(_plan_sizes(rng, budget, TEXT_MIN, largest)):
        kind, pattern = kinds[i % 3]
        path = root / pattern.format(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, pools.text(kind, _rng(seed, path.relative_to(root)), size), next(mtime))
        stats.add("text", size)
    log(f"  text: {stats.by_class['text'][0]} files, {stats.by_class['text'][1] / MiB:.0f} MiB "
        f"({time.monotonic() - started:.1f} s)")

    # incompressible
    rng = _rng(seed, "bin-sizes")
    names = ["media/clip_{:03d}.mp4", "archives/bundle_{:03d}.tar.zst", "vm/disk_{:03d}.img.enc"]
    budget = int(total * BINARY_SHARE)
    largest = max(2 * BIN_MIN, min(BIN_MAX, budget // 3))
    for i, size in enumerate(_plan_sizes(rng, budget, BIN_MIN, largest)):
        path = root / names[i % len(names)].format(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, _rng(seed, path.relative_to(root)).randbytes(size), next(mtime))
        stats.add("binary", size)
    log(f"  binary: {stats.by_class['binary'][0]} files, {stats.by_class['binary'][1] / MiB:.0f} MiB "
        f"({time.monotonic() - started:.1f} s)")

    # small files: count scaled, sizes uniform 1..9 KiB (mean 5 KiB: 40k files ~ 195 MiB ~ 19 % at 1.0)
    count = max(1, round(SMALL_FILES_AT_FULL * scale))
    rng = _rng(seed, "small")
    for i in range(count):
        path = root / _small_path(i)
        if i % FILES_PER_DIR == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        size = rng.randint(SMALL_MIN, SMALL_MAX)
        _write(path, _small_content(pools, seed, path.relative_to(root), size), next(mtime))
        stats.add("small", size)
    log(f"  small: {stats.by_class['small'][0]} files, {stats.by_class['small'][1] / MiB:.0f} MiB "
        f"({time.monotonic() - started:.1f} s)")
    _age_dirs(root)
    return stats


def _small_path(i: int) -> str:
    d, f = divmod(i, FILES_PER_DIR)
    ext = (".json", ".bin", ".md", ".dat")[i % 4]
    return f"small/pkg_{d // 20:03d}/mod_{d % 20:02d}/item_{f:03d}{ext}"


def _small_content(pools: TextPools, seed: int, rel: object, size: int) -> bytes:
    rng = _rng(seed, rel)
    if str(rel).endswith((".json", ".md")):
        return pools.text("jsonl" if str(rel).endswith(".json") else "log", rng, size)
    return rng.randbytes(size)


def _age_dirs(root: Path) -> None:
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        os.utime(dirpath, (BASE_MTIME, BASE_MTIME))


# --- mutation --------------------------------------------------------------------------------------


def _files(root: Path, sub: str) -> list[Path]:
    base = root / sub
    return sorted(p for p in base.rglob("*") if p.is_file()) if base.exists() else []


def tree_bytes(root: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(dirpath, name)).st_size
    return files, size


def mutate(
    root: Path, seed: int = 1, fraction: float = 0.02, log: Callable[[str], None] = print
) -> dict[str, int]:
    """Change about `fraction` of the tree's bytes, deterministically for a given tree and seed.

    35 % of the budget rewrites regions of big binary files in place, 25 % inserts new lines in the middle
    of CSV/JSON-lines files, 20 % appends to logs, 20 % adds and rewrites small files; a few small files
    are deleted. Changed files get the current time as mtime, like real edits.
    """
    _, total = tree_bytes(root)
    budget = int(total * fraction)
    rng = _rng(seed, "mutate")
    pools = TextPools(seed)
    done = {"binary_rewritten": 0, "text_inserted": 0, "log_appended": 0, "small_added": 0,
            "small_rewritten": 0, "small_deleted": 0, "files_touched": 0}

    # binary: overwrite 1-4 MiB regions at random offsets
    share = int(budget * 0.35)
    binaries = _files(root, "media") + _files(root, "archives") + _files(root, "vm")
    rng.shuffle(binaries)
    for path in itertools.cycle(binaries) if binaries else ():
        if done["binary_rewritten"] >= share:
            break
        size = path.stat().st_size
        length = min(rng.randint(1 * MiB, 4 * MiB), size, share - done["binary_rewritten"])
        offset = rng.randrange(0, size - length + 1)
        with open(path, "r+b") as handle:
            handle.seek(offset)
            handle.write(rng.randbytes(length))
        done["binary_rewritten"] += length
        done["files_touched"] += 1

    # text: insert a block of new rows in the middle of CSV / JSON-lines files
    share = int(budget * 0.25)
    texts = _files(root, "text/csv") + _files(root, "text/jsonl")
    rng.shuffle(texts)
    for path in texts:
        if done["text_inserted"] >= share:
            break
        data = path.read_bytes()
        middle = data.find(b"\n", len(data) // 2) + 1
        length = min(rng.randint(64 * KiB, 512 * KiB), share - done["text_inserted"])
        kind = "csv" if path.suffix == ".csv" else "jsonl"
        block = pools.text(kind, rng, length, first_id=10_000_000 + rng.randrange(1_000_000))
        path.write_bytes(data[:middle] + block + data[middle:])
        done["text_inserted"] += len(block)
        done["files_touched"] += 1

    # logs: append
    share = int(budget * 0.20)
    logs = _files(root, "text/logs")
    rng.shuffle(logs)
    for path in logs:
        if done["log_appended"] >= share:
            break
        length = min(rng.randint(128 * KiB, 1 * MiB), share - done["log_appended"])
        with open(path, "ab") as handle:
            handle.write(pools.text("log", rng, length))
        done["log_appended"] += length
        done["files_touched"] += 1

    # small files: add new ones (70 %), rewrite existing ones (30 %), delete about 1 %
    share = int(budget * 0.20)
    smalls = _files(root, "small")
    existing = len(smalls)
    i = 0
    while done["small_added"] < share * 0.7:
        path = root / _small_path(existing + 1_000_000 + i)
        path.parent.mkdir(parents=True, exist_ok=True)
        size = rng.randint(SMALL_MIN, SMALL_MAX)
        path.write_bytes(_small_content(pools, seed + 1, path.relative_to(root), size))
        done["small_added"] += size
        done["files_touched"] += 1
        i += 1
    victims = rng.sample(smalls, min(len(smalls), max(1, len(smalls) // 100) + 64))
    for path in victims[64:]:
        path.unlink()
        done["small_deleted"] += 1
    for path in victims[:64] + smalls:
        if done["small_rewritten"] >= share * 0.3 or not path.exists():
            if done["small_rewritten"] >= share * 0.3:
                break
            continue
        size = rng.randint(SMALL_MIN, SMALL_MAX)
        path.write_bytes(_small_content(pools, seed + 2, path.relative_to(root), size))
        done["small_rewritten"] += size
        done["files_touched"] += 1
    changed = sum(v for k, v in done.items() if k not in ("small_deleted", "files_touched"))
    done["bytes_changed"] = changed
    done["tree_bytes_before"] = total
    log(f"  mutation: {changed / MiB:.1f} MiB changed ({100 * changed / max(1, total):.2f} % of "
        f"{total / MiB:.0f} MiB) in {done['files_touched']} files, {done['small_deleted']} files deleted")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write a new tree")
    gen.add_argument("dir", type=Path)
    gen.add_argument("--scale", type=float, default=1.0, help="1.0 = about 1 GiB")
    gen.add_argument("--seed", type=int, default=1)
    mut = sub.add_parser("mutate", help="change about 2 %% of an existing tree")
    mut.add_argument("dir", type=Path)
    mut.add_argument("--seed", type=int, default=1)
    mut.add_argument("--fraction", type=float, default=0.02)
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.command == "generate":
        stats = generate(args.dir, args.scale, args.seed)
        elapsed = time.monotonic() - started
        print(f"generated {stats.files} files, {stats.bytes / MiB:.1f} MiB in {elapsed:.1f} s")
    else:
        mutate(args.dir, args.seed, args.fraction)
        print(f"mutated in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
