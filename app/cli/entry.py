"""The `equisplit-dr` console script. `wal fetch` of a segment the prefetcher has spooled is served
here, before the CLI framework and settings are imported: recovery runs that command once per segment,
and the full start-up costs more than the segment itself (docs/WAL.md section 4)."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path


def _spool_hit(args: list[str]) -> bool:
    """Serve `wal fetch NAME DEST [--source S] [--spool DIR]` from the spool; False to take the full path."""
    positional: list[str] = []
    source = os.environ.get("EQUISPLIT_DR_SOURCE")
    spool: str | None = None
    rest = iter(args)
    for arg in rest:
        if arg in ("--source", "-s"):
            source = next(rest, None)
        elif arg.startswith("--source="):
            source = arg.split("=", 1)[1]
        elif arg == "--spool":
            spool = next(rest, None)
        elif arg.startswith("--spool="):
            spool = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            return False  # anything else (--prefetch, --help): the full command decides
        else:
            positional.append(arg)
    if len(positional) != 2 or not source:
        return False
    from app.wal.spool import serve_hit

    try:
        return serve_hit(source, positional[0], Path(positional[1]), Path(spool) if spool else None)
    except OSError:
        return False  # the full path fetches from storage and reports what is wrong


def main() -> None:
    args = sys.argv[1:]
    if args[:2] == ["wal", "fetch"] and _spool_hit(args[2:]):
        return
    from app.cli.main import main as cli_main

    # A backup builds hundreds of thousands of small objects (manifest entries) that live to the end:
    # the collector's default thresholds re-scan them over and over for nothing. The modules just
    # imported are frozen out of its sight, and young collections run less often.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    cli_main()


if __name__ == "__main__":
    main()
