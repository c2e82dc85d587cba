"""Writing restored content with holes where it is zeros, so a sparse file comes back sparse."""

from __future__ import annotations

import os

#: The hole granularity (docs/FORMAT.md section 6, "Holes"): an all-zero block of this size at a file
#: offset that is a multiple of it is left unwritten in a file already sized to its length.
SPARSE_BLOCK = 4096
_ZEROS = bytes(SPARSE_BLOCK)


def write_sparse(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write `data` at `offset` of `fd`, skipping its aligned all-zero blocks. The file must already
    be at least `offset + len(data)` long (ftruncate), so a skipped block reads as zeros."""
    raw = bytes(data) if isinstance(data, memoryview) else data
    end = len(raw)
    found = raw.find(_ZEROS)
    view = memoryview(raw)
    if found < 0:  # the common case: no zero block at all, one write
        _write_all(fd, view, offset)
        return
    pending = 0  # start of the bytes not yet written
    while found >= 0:
        block = found + (-(offset + found) % SPARSE_BLOCK)  # the first aligned block at or after it
        hole = block
        while hole + SPARSE_BLOCK <= end and raw[hole : hole + SPARSE_BLOCK] == _ZEROS:
            hole += SPARSE_BLOCK
        if hole > block:  # [block, hole) stays a hole
            if block > pending:
                _write_all(fd, view[pending:block], offset + pending)
            pending = hole
            found = raw.find(_ZEROS, hole)
        else:
            found = raw.find(_ZEROS, block + 1)
    if pending < end:
        _write_all(fd, view[pending:], offset + pending)


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written
