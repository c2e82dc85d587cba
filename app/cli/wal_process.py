"""`wal push` and `wal fetch` as PostgreSQL runs them: one process per WAL file, the exit status its
answer, messages as plain lines on stderr (they end up in the server log). The Typer commands and the
fast path of `app/cli/entry.py` both call these; nothing here imports the CLI framework, and the
settings, catalog and keys load only when a command needs them (docs/WAL.md sections 3 and 4).

A command that had to load them all forks, once it has answered, into the helper that keeps the next
files ready (the pusher, the prefetcher), which so starts with no start-up cost of its own. Call these
only as a process's command, never from a library caller: they may fork.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from app.errors import EquisplitError, WalNotFoundError

if TYPE_CHECKING:
    from app.wal.pushspool import PushSpool

#: `wal fetch` adds this to an error's exit code: PostgreSQL stops recovery on a status above 125
#: instead of ending it early at a file that exists but cannot be restored (docs/WAL.md section 4).
FETCH_FATAL_BASE = 128


def report(exc: EquisplitError) -> None:
    """Print an error as `error:`, `detail:` and `hint:` lines on stderr."""
    lines = [f"error: {exc.message}"]
    if exc.detail:
        lines.append(f"  detail: {exc.detail}")
    if exc.hint:
        lines.append(f"  hint: {exc.hint}")
    print("\n".join(lines), file=sys.stderr, flush=True)


def push_command(path: Path, source: str, *, spool: Path | None = None, verbose: bool = False) -> int:
    """Archive `path`: exit status 0 only once it is durable and recorded.

    With WAL_PUSH_ASYNC on (the default) and a file PostgreSQL has marked ready, the pusher's
    acknowledgement answers at once; otherwise (no pusher yet, a pusher that failed on this file, died,
    or runs with other settings) the file is pushed here, and a pusher is started for the next ones.
    """
    from app.wal import pushspool

    push_spool = pushspool.PushSpool.for_file(path, source, spool)
    if pushspool.async_enabled(os.environ) and _acknowledged(push_spool, path):
        if verbose:
            print(f"{path.name}: archived by the pusher", flush=True)
        return 0

    from app.context import Context
    from app.settings import load_settings
    from app.wal import lockfile, pusher
    from app.wal.push import push

    try:
        settings = load_settings()
        ctx = Context(settings)
        try:
            pushed = push(ctx, source, path)
        finally:
            ctx.close()
    except EquisplitError as exc:
        report(exc)
        return exc.exit_code
    for name, reason in pushed.failed:
        print(f"warning: {name} (ahead) not archived: {reason}", file=sys.stderr, flush=True)
    if verbose:
        from app.cli.render import human

        for done in (pushed.requested, *pushed.ahead):
            print(f"{done.name}: {done.outcome} ({human(done.size)} -> {human(done.stored_size)})")
    if settings.wal_push_async and push_spool.is_ready(path.name) and push_spool.pusher() is None:
        log = push_spool.dir / pushspool.LOG
        command = ["app.wal.pusher", "--source", source, "--wal-dir", str(push_spool.wal_dir)]
        command += ["--spool", str(push_spool.root)]
        _become_helper(
            log,
            lambda: pusher.serve(push_spool, source, settings),
            lambda: lockfile.spawn([sys.executable, "-m", *command], log),
        )
    return 0


def _acknowledged(push_spool: PushSpool, path: Path) -> bool:
    from app.wal.pushspool import fingerprint

    try:
        return push_spool.await_ack(path, fingerprint(os.environ))
    except OSError:  # an unreadable spool: the direct push does not need it
        return False


def fetch_command(
    name: str, dest: Path, source: str, *, spool: Path | None = None, prefetch: int | None = None
) -> int:
    """Restore WAL file `name` to `dest`: 0; 1 silently if it is not archived; above 128 on any failure."""
    from app.settings import load_settings
    from app.wal import names
    from app.wal.fetch import fetch, open_repository
    from app.wal.prefetch import serve as serve_prefetcher
    from app.wal.spool import LOG as spool_log
    from app.wal.spool import Spool, default_root

    try:
        settings = load_settings()
        depth = settings.wal_prefetch if prefetch is None else prefetch
        repo = open_repository(settings)
        try:
            width = settings.wal_prefetch_concurrency
            fetch(
                repo, source, name, dest,
                prefetch=depth, concurrency=width, spool_root=spool, start_prefetcher=False,
            )  # fmt: skip
        finally:
            repo.storage.close()
    except WalNotFoundError:
        return 1
    except EquisplitError as exc:
        report(exc)
        return FETCH_FATAL_BASE + exc.exit_code
    except Exception as exc:  # an unforeseen failure must stop recovery too, not read as "not archived"
        print(f"error: fetching {name} failed: {exc!r}", file=sys.stderr, flush=True)
        return FETCH_FATAL_BASE + 1
    fetch_spool = Spool(spool or default_root(dest), source)
    if depth > 0 and names.parse(name).is_segment and not fetch_spool.prefetcher_alive():
        ahead = settings.model_copy(update={"wal_prefetch": depth})
        _become_helper(
            fetch_spool.dir / spool_log,
            lambda: serve_prefetcher(fetch_spool, ahead),
            fetch_spool.ensure_prefetcher,
        )
    return 0


def _become_helper(log: Path, serve: Callable[[], int], start: Callable[[], None]) -> None:
    """Fork; the child runs `serve` (a helper's life, its output appended to `log`) and exits. If this
    process cannot fork safely, `start` the helper as a new process instead (it loads what it needs)."""
    from app.wal import lockfile

    log.parent.mkdir(parents=True, exist_ok=True)
    forked = lockfile.fork_detached(log)
    if forked is None:
        start()
    if not forked:
        return
    code = 1
    try:
        code = serve()
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
