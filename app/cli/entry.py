"""The `equisplit-dr` console script. `wal push` and `wal fetch`, which PostgreSQL runs once per WAL
file, skip the CLI framework (docs/WAL.md sections 3 and 4): a push the pusher has acknowledged and a
fetch of a segment the prefetcher has spooled are answered before settings, catalog or keys load, and
the others load only what they need. Any other form of those commands takes the full CLI."""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sys
import threading
from pathlib import Path
from typing import NoReturn

SOURCE_ENV = "EQUISPLIT_DR_SOURCE"


def _parse(args: list[str], options: tuple[str, ...]) -> tuple[list[str], dict[str, str]] | None:
    """Positional arguments and `options` (with `--source`/`-s`, whose default is EQUISPLIT_DR_SOURCE);
    None for anything else (`--help`, `--verbose`, a typo): the full CLI decides."""
    positional: list[str] = []
    found: dict[str, str] = {}
    if source := os.environ.get(SOURCE_ENV):
        found["--source"] = source
    rest = iter(args)
    for arg in rest:
        option, equals, value = arg.partition("=")
        option = "--source" if option == "-s" else option
        if option in ("--source", *options):
            given = value if equals else next(rest, None)
            if given is None:
                return None
            found[option] = given
        elif arg.startswith("-"):
            return None
        else:
            positional.append(arg)
    return positional, found


def _fetch(args: list[str]) -> int | None:
    """`wal fetch NAME DEST [--source S] [--spool DIR] [--prefetch N]`: a spool hit, else a fetch."""
    parsed = _parse(args, ("--spool", "--prefetch"))
    if parsed is None or len(parsed[0]) != 2 or "--source" not in parsed[1]:
        return None
    (name, dest), options = parsed
    prefetch = options.get("--prefetch")
    if prefetch is not None and not prefetch.isdigit():
        return None  # the full CLI reports it
    source, spool = options["--source"], options.get("--spool")
    if prefetch is None:
        from app.wal.spool import serve_hit

        try:
            if serve_hit(source, name, Path(dest), Path(spool) if spool else None):
                return 0
        except OSError:
            pass  # fetched from storage below, which reports what is wrong
    from app.cli.wal_process import fetch_command

    depth = int(prefetch) if prefetch is not None else None
    return fetch_command(name, Path(dest), source, spool=Path(spool) if spool else None, prefetch=depth)


def _push(args: list[str]) -> int | None:
    """`wal push PATH [--source S] [--spool DIR]`."""
    parsed = _parse(args, ("--spool",))
    if parsed is None or len(parsed[0]) != 1 or "--source" not in parsed[1]:
        return None
    (path,), options = parsed
    from app.cli.wal_process import push_command

    spool = options.get("--spool")
    return push_command(Path(path), options["--source"], spool=Path(spool) if spool else None)


def main() -> None:
    args = sys.argv[1:]
    fast = {"fetch": _fetch, "push": _push}.get(args[1]) if len(args) > 1 and args[0] == "wal" else None
    try:
        code = fast(args[2:]) if fast is not None else None
    except KeyboardInterrupt:
        sys.exit(130)
    if code is not None:
        sys.exit(code)
    # A backup builds hundreds of thousands of small objects (manifest entries) that live to the end,
    # and the CLI's imports as many: the collector's default thresholds re-scan them over and over for
    # nothing (~7 % of the imports' CPU). Young collections run less often, and the modules imported
    # are frozen out of its sight.
    # Nor does it collect while the CLI's modules import: they all stay.
    gc.set_threshold(50_000, 20, 100)
    gc.disable()
    from app.cli.main import main as cli_main

    gc.freeze()
    gc.enable()
    try:
        cli_main()
    except SystemExit as done:
        exit_now(done.code)
    exit_now(0)


def exit_now(code: str | int | None) -> NoReturn:
    """End the process as `sys.exit(code)` would, without the interpreter's tear-down of every module
    and object: after a backup it freed hundreds of thousands of objects one by one, 0.1-0.3 s on the
    serial stretch at the end of every command. What must happen at exit still does: every atexit
    handler runs (logging, multiprocessing's finalizers, temporary directories), then the standard
    streams are flushed. While another thread that is not a daemon runs, the normal exit waits for it."""
    main = threading.main_thread()
    if any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # as sys.exit(message): the message goes to stderr, the status is 1
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # a closed pipe: the normal exit would not have written either
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
