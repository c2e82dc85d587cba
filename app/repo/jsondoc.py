"""Compact JSON as the repository writes it: sealed documents and manifest lines (docs/FORMAT.md)."""

from __future__ import annotations

import json
from typing import Any

import orjson


def dump_json(doc: Any) -> bytes:
    """Compact JSON; orjson, except for what only the standard encoder writes: names that are not
    UTF-8 (kept as surrogate escapes, `\\udcXX`) and integers beyond 64 bits. Equal documents give
    equal bytes (manifest chunks deduplicate on it)."""
    try:
        return orjson.dumps(doc)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(doc, separators=(",", ":")).encode()


def load_json(data: bytes | memoryview) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # e.g. a surrogate escape orjson refuses; real damage raises again
        return json.loads(bytes(data))
