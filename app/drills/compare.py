"""A restored tree against the manifest it came from: every entry there, of its type and size, and
nothing more. Content needs no second look: the restore opened every chunk under its keyed hash."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

#: At most this many differences are named.
NAMED = 50

_KINDS = {
    "dir": stat.S_ISDIR,
    "file": stat.S_ISREG,
    "hardlink": stat.S_ISREG,
    "symlink": stat.S_ISLNK,
    "fifo": stat.S_ISFIFO,
    "chardev": stat.S_ISCHR,
    "blockdev": stat.S_ISBLK,
}


def compare_tree(root: Path, entries: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """(entries checked, differences) of the tree under `root` against the manifest's entries."""
    differences: list[str] = []
    expected = {""}
    for entry in entries:
        path = entry["path"]
        expected.add(path)
        problem = _check(root, entry)
        if problem and len(differences) < NAMED:
            differences.append(f"{path}: {problem}")
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            path = name if rel == "." else f"{rel}/{name}"
            if path not in expected and len(differences) < NAMED:
                differences.append(f"{path}: restored, but not in the manifest")
    return len(entries), differences


def _check(root: Path, entry: dict[str, Any]) -> str | None:
    path = root / entry["path"]
    kind = entry.get("type")
    try:
        st = path.lstat()
    except OSError:
        # device nodes are made only by root; elsewhere the restore names them in its warnings
        return None if kind in ("chardev", "blockdev") and os.geteuid() != 0 else "missing"
    test = _KINDS.get(str(kind))
    if test is not None and not test(st.st_mode):
        return f"restored as {stat.filemode(st.st_mode)}, the manifest says {kind}"
    if kind == "file" and st.st_size != entry.get("size", st.st_size):
        return f"{st.st_size} bytes, the manifest says {entry.get('size')}"
    if kind == "symlink" and os.readlink(path) != entry.get("target"):
        return f"links to {os.readlink(path)!r}, the manifest says {entry.get('target')!r}"
    if kind == "hardlink":
        target = root / str(entry.get("target"))
        if not target.exists() or not os.path.samestat(st, target.lstat()):
            return f"not a hard link of {entry.get('target')}"
    return None
