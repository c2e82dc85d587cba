"""A small deterministic sample tree for the demo: text, incompressible bytes, small files, a symlink."""

from __future__ import annotations

import os
import random
from pathlib import Path


def make_sample_tree(root: Path, seed: int = 7) -> int:
    """Write the tree; returns its size in bytes."""
    rng = random.Random(seed)
    (root / "matters" / "2025").mkdir(parents=True, exist_ok=True)
    (root / "scans").mkdir(exist_ok=True)
    (root / "notes").mkdir(exist_ok=True)
    (root / "empty-dir").mkdir(exist_ok=True)
    total = 0
    lines = [
        f"{i},client-{rng.randrange(5000)},{rng.randrange(10**6) / 100:.2f},2025-06-{i % 28 + 1:02d}\n"
        for i in range(120_000)
    ]
    data = ("id,client,amount,date\n" + "".join(lines)).encode()
    (root / "matters" / "2025" / "ledger.csv").write_bytes(data)
    total += len(data)
    for i in range(3):
        blob = rng.randbytes((2 + i) << 20)
        (root / "scans" / f"scan-{i}.pdf").write_bytes(blob)
        total += len(blob)
    for i in range(300):
        text = f"note {i}: " + " ".join(
            rng.choice(["custody", "asset", "filing", "hearing", "party"])
            for _ in range(rng.randrange(100, 900))
        )
        (root / "notes" / f"note-{i:04d}.txt").write_text(text)
        total += len(text)
    os.symlink("matters/2025/ledger.csv", root / "current-ledger")
    return total


def mutate_sample_tree(root: Path, seed: int = 8) -> None:
    """A small change: append to the ledger, edit a note, add a file, delete one."""
    rng = random.Random(seed)
    with open(root / "matters" / "2025" / "ledger.csv", "a") as handle:
        handle.write(
            "".join(f"{900000 + i},client-{rng.randrange(5000)},1.00,2025-07-01\n" for i in range(500))
        )
    (root / "notes" / "note-0007.txt").write_text("note 7: revised after the hearing")
    (root / "notes" / "note-new.txt").write_text("a new note")
    (root / "notes" / "note-0008.txt").unlink()
