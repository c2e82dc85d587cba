"""WAL positions (LSNs) as PostgreSQL writes them (`16/B374D848`), and the segments that hold them."""

from __future__ import annotations

import re

from app.errors import WalError
from app.wal import names

_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse(text: str) -> int:
    """The byte position of `text` (`X/Y`, both hexadecimal); WalError if it is not one."""
    match = _LSN.match(text.strip())
    if match is None:
        raise WalError(f"{text!r} is not a WAL position", hint="write it as PostgreSQL does, e.g. 0/3000060")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(position: int) -> str:
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


def segno_of(position: int, segment_size: int) -> int:
    """The segment holding the byte at `position` (XLByteToSeg)."""
    return position // segment_size


def segno_before(position: int, segment_size: int) -> int:
    """The segment holding the byte just before `position` (XLByteToPrevSeg): where WAL ending at
    `position` ends."""
    return (position - 1) // segment_size


def segment_of(timeline: int, position: int, segment_size: int) -> str:
    return names.segment_name(timeline, segno_of(position, segment_size), segment_size)
