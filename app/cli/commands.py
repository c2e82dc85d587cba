"""What every command shares: domain errors printed with their exit codes (never a traceback), and the
system and scheduler opened from the environment's settings."""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from app.cli.render import fail
from app.errors import EquisplitError

F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(func: F) -> F:
    """A command whose domain errors print as message, detail and hint, and exit with their code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EquisplitError as exc:
            fail(exc)

    return wrapper  # type: ignore[return-value]


def open_system(region: str | None = None, *, audited: bool = True) -> Any:
    """A BackupSystem on the environment's settings (of the primary, or of a secondary region). Its
    configuration is audited when it opens the catalog (docs/AUDIT.md section 6), unless `audited` is
    False: `audit verify` writes nothing, so a truncated trail stays a prefix `catalog rebuild` extends."""
    with _importing():
        from app.settings import load_settings
        from app.system import BackupSystem

    system = BackupSystem(load_settings(), region=region)
    if audited:
        system.context.process = "cli"
    return system


@contextlib.contextmanager
def _importing() -> Iterator[None]:
    """Modules imported inside stay for the process's life: the collector does not run while they
    import, and they are frozen out of its sight after, as app/cli/entry.py does with the CLI's own."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def open_scheduler(*, audited: bool = True) -> Any:
    """A BackupScheduler on the environment's settings; `audited` as for `open_system`."""
    from app.scheduler import BackupScheduler
    from app.settings import load_settings

    scheduler = BackupScheduler(load_settings())
    if audited:
        scheduler.context.process = "cli"
    return scheduler
