"""Seeded test trees and a strict comparison of two trees."""

from __future__ import annotations

import os
import random
from pathlib import Path

from app.cli.demo import trees_equal

OLD_MTIME_NS = 1_700_000_000_000_000_000

__all__ = ["age_tree", "make_tree", "trees_equal"]


def make_tree(root: Path, seed: int = 1, *, big_mib: int = 6, small: int = 40) -> Path:
    """Text, incompressible bytes, small files, an empty file and dir, a symlink, odd modes."""
    rng = random.Random(seed)
    (root / "docs" / "deep" / "er").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "empty-dir").mkdir()
    (root / "docs" / "ledger.csv").write_text(
        "".join(f"{i},client-{rng.randrange(999)},{rng.random():.4f}\n" for i in range(300_000))
    )
    (root / "bin" / "blob.bin").write_bytes(rng.randbytes(big_mib << 20))
    for i in range(small):
        (root / "docs" / "deep" / "er" / f"n{i:03d}.txt").write_bytes(rng.randbytes(rng.randrange(1, 9000)))
    (root / "docs" / "empty.txt").write_bytes(b"")
    (root / "docs" / "private.key").write_text("not really a key")
    os.chmod(root / "docs" / "private.key", 0o600)
    os.chmod(root / "bin", 0o750)
    os.symlink("docs/ledger.csv", root / "ledger-link")
    os.symlink("/nonexistent/target", root / "dangling")
    age_tree(root)
    return root


def age_tree(root: Path) -> None:
    """Give every entry an old mtime, as a real tree has (ctime stays now)."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(Path(dirpath) / name, ns=(OLD_MTIME_NS, OLD_MTIME_NS), follow_symlinks=False)
    os.utime(root, ns=(OLD_MTIME_NS, OLD_MTIME_NS))


def assert_same_tree(a: Path, b: Path) -> None:
    diffs = trees_equal(a, b)
    assert diffs == [], f"trees differ: {diffs[:10]}"


def flat_tree(root: Path, files: int, mib: int, *, text: bool = False) -> Path:
    """`files` files of `mib` MiB each: random bytes, or CSV-like text that compresses but never
    deduplicates (random bytes every 4 KiB), so every unit costs real compression work."""
    root.mkdir()
    for i in range(files):
        if text:
            line = f"{i},matter-{i * 7919 % 100003},party {i % 97},filed\n".encode()
            data = (line * ((mib << 20) // len(line) + 1))[: mib << 20]
            data = b"".join(data[j : j + 4096] + os.urandom(8) for j in range(0, len(data), 4096))
        else:
            data = os.urandom(mib << 20)
        (root / f"f{i:03d}.dat").write_bytes(data)
    return root
