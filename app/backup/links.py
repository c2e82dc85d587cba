"""Hard links at the end of a backup: a link whose file could not be read has no content to link to."""

from __future__ import annotations

from typing import Any


def drop_dangling_links(entries: list[dict[str, Any]], errors: list[dict[str, str]]) -> list[dict[str, Any]]:
    """`entries` without the hard links whose target is not a file among them (it failed to read or
    vanished); each dropped link is named in `errors`, as its target is (docs/FORMAT.md section 6)."""
    if not any(e["type"] == "hardlink" for e in entries):
        return entries  # the usual tree: no set of every file's path to build
    files = {e["path"] for e in entries if e["type"] == "file"}
    kept: list[dict[str, Any]] = []
    for entry in entries:
        if entry["type"] == "hardlink" and entry.get("target") not in files:
            errors.append(
                {
                    "path": entry["path"],
                    "error": f"hard link to {entry.get('target')}, which could not be read",
                }
            )
            continue
        kept.append(entry)
    return kept
