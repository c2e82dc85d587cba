"""Readers: restores, verifications and drills registered in the catalog while they run, each as a lease
`reader:KIND:WHAT:ID` that a background thread renews, so garbage collection holds the packs it marks
or repacks while a reader that may have located its chunks before that is still running (docs/GC.md
section 2). A reader whose process died stops counting when its lease expires (at once on this host)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app import clock
from app.catalog.locks import Lease, holder_is_dead
from app.catalog.models import Lock

PREFIX = "reader:"
TTL = timedelta(minutes=10)


@contextmanager
def reading(
    factory: sessionmaker[Session], write_lock: AbstractContextManager[Any], kind: str, what: str
) -> Iterator[Lease]:
    """Registered as a running reader (`kind`: restore, verify, drill; `what`: the backup or scope)
    for the life of the block: register before the first chunk is located."""
    with Lease(factory, f"{PREFIX}{kind}:{what}:{uuid.uuid4().hex[:12]}"[:255], TTL, write_lock) as lease:
        yield lease


class _Catalog(Protocol):
    """What registering needs of a context: its sessions and its catalog write lock."""

    @property
    def sessions(self) -> sessionmaker[Session]: ...

    @property
    def catalog_write_lock(self) -> AbstractContextManager[Any]: ...


C = TypeVar("C", bound=_Catalog)
P = ParamSpec("P")
R = TypeVar("R")


def registered_reader(
    kind: str,
) -> Callable[[Callable[Concatenate[C, str, P], R]], Callable[Concatenate[C, str, P], R]]:
    """Run the decorated `fn(ctx, selector, ...)` registered as a running reader of `selector`."""

    def decorate(fn: Callable[Concatenate[C, str, P], R]) -> Callable[Concatenate[C, str, P], R]:
        @functools.wraps(fn)
        def run(ctx: C, selector: str, /, *args: P.args, **kwargs: P.kwargs) -> R:
            with reading(ctx.sessions, ctx.catalog_write_lock, kind, selector):
                return fn(ctx, selector, *args, **kwargs)

        return run

    return decorate


def running(session: Session) -> set[str]:
    """The names of the readers registered now: lease not expired, holder not a dead process here."""
    now = clock.now()
    return {
        lock.name
        for lock in session.scalars(select(Lock).where(Lock.name.startswith(PREFIX)))
        if clock.as_utc(lock.expires_at) > now and not holder_is_dead(lock.holder)
    }
