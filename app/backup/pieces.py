"""Joining a big file's pieces (read by separate units, app/backup/plan.py `Item`) back into one
manifest entry: chunks in offset order, the size they hold, the oldest timestamps seen."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

#: Codes of unit warnings for files that were not stored (app/sources/confined.py: VANISHED, REPLACED).
NOT_STORED = frozenset({"vanished", "replaced"})

CHANGED = (
    "changed while being read (its pieces were read at different times and disagree); "
    "the stored copy may mix old and new content"
)


def merge_pieces(
    entries: list[dict[str, Any]],
    errors: list[dict[str, str]],
    warnings: list[dict[str, str]],
    *,
    expect_changes: bool = False,
) -> list[dict[str, Any]]:
    """`entries` with each file's pieces joined into one entry. A file with a piece that could not be
    read is left out (it is named in `errors`, once). A file whose pieces disagree (it changed between
    them, or a piece is missing) gets a warning in `warnings`, unless `expect_changes` (PostgreSQL:
    WAL replay repairs torn files)."""
    whole: list[dict[str, Any]] = []
    parts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        if "piece" in entry:
            parts[entry["path"]].append(entry)
        else:
            whole.append(entry)
    failed = {e["path"] for e in errors}
    # a piece found its file gone or replaced since the walk (app/sources/confined.py): none is stored
    failed |= {w["path"] for w in warnings if w.get("code") in NOT_STORED}
    named: dict[tuple[str, str | None], dict[str, str]] = {}
    for warning in warnings:  # a file's every piece noticed it
        named.setdefault((warning["path"], warning.get("code") or warning["warning"]), warning)
    warnings[:] = list(named.values())
    once: dict[str, dict[str, str]] = {}
    for error in errors:  # a file's every unreadable piece reported it
        once.setdefault(error["path"], error)
    errors[:] = list(once.values())
    for path, pieces in parts.items():
        if path in failed:
            continue
        pieces.sort(key=lambda p: p["piece"]["offset"])
        position, contiguous = 0, True
        for piece in pieces:
            if piece["piece"]["offset"] != position:
                contiguous = False
            position = piece["piece"]["offset"] + piece["piece"]["read"]
        stats = {(p["size"], p["mtime_ns"], p.get("ctime_ns", 0)) for p in pieces}
        merged = {k: v for k, v in pieces[0].items() if k != "piece"}
        merged["chunks"] = [c for p in pieces for c in p["chunks"]]
        merged["size"] = sum(p["piece"]["read"] for p in pieces)
        merged["mtime_ns"] = min(p["mtime_ns"] for p in pieces)  # the oldest: a change is re-read next time
        merged["ctime_ns"] = min(p.get("ctime_ns", 0) for p in pieces)
        if (not contiguous or len(stats) > 1) and not expect_changes:
            warnings.append({"path": path, "warning": CHANGED})
        whole.append(merged)
    return whole
