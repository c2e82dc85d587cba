"""Which process stores a chunk, when one backup runs on several processes of this machine.

Without it, two processes that meet the same new content at once (identical files in different
units) would both store it. The table is a fixed-size open-addressing set of 128-bit chunk id
prefixes in shared memory, under one lock: the first process to claim an id stores the chunk, the
others only name it. A unit that names a chunk another process claimed is safe to finish first:
the backup completes only if every unit succeeded, and each unit's packs are durable before it does.

A full table (more new chunks than the plan foresaw) claims nothing more: content may then be stored
twice, which costs space, never correctness.
"""

from __future__ import annotations

import ctypes
from multiprocessing.context import BaseContext
from typing import Any

#: Probes before a claim gives up on a crowded table (and lets the caller store the chunk).
MAX_PROBES = 64
MAX_SLOTS = 1 << 23  # 128 MiB of shared memory at most


class SharedClaims:
    """Picklable into the processes of a pool (passed when they are created)."""

    def __init__(self, mp: BaseContext, expected: int) -> None:
        slots = 1024
        while slots < expected * 2 and slots < MAX_SLOTS:
            slots *= 2
        self._mask = slots - 1
        self._table: Any = mp.RawArray(ctypes.c_uint64, slots * 2)  # (high, low); (0, 0) is empty
        self._lock = mp.Lock()

    def claim(self, chunk_id: str) -> bool:
        """True if this caller is the first to claim `chunk_id` (a hex id) and so must store it."""
        high, low = int(chunk_id[:16], 16), int(chunk_id[16:32], 16)
        if high == 0 and low == 0:
            low = 1  # (0, 0) marks an empty slot
        table, index = self._table, high & self._mask
        with self._lock:
            for _ in range(MAX_PROBES):
                at = index * 2
                found_high, found_low = table[at], table[at + 1]
                if found_high == 0 and found_low == 0:
                    table[at], table[at + 1] = high, low
                    return True
                if found_high == high and found_low == low:
                    return False
                index = (index + 1) & self._mask
        return True
