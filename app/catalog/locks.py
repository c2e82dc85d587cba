"""Leases in the catalog that keep two jobs off one source, across processes and hosts."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from contextlib import AbstractContextManager
from datetime import timedelta
from types import TracebackType
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app import clock
from app.catalog.db import transaction
from app.catalog.models import Lock
from app.errors import LockedError

log = logging.getLogger(__name__)


def new_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _holder_is_dead(holder: str) -> bool:
    """A holder on this host whose process is gone can never release its lease."""
    host, _, rest = holder.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def acquire(factory: sessionmaker[Session], name: str, holder: str, ttl: timedelta) -> None:
    """Take the lease `name` or raise LockedError naming who holds it."""
    now = clock.now()
    try:
        with transaction(factory) as session:
            session.add(Lock(name=name, holder=holder, acquired_at=now, expires_at=now + ttl))
        return
    except IntegrityError:
        pass
    with transaction(factory) as session:
        current = session.scalar(select(Lock).where(Lock.name == name))
        if current is None:
            session.add(Lock(name=name, holder=holder, acquired_at=now, expires_at=now + ttl))
            return
        if clock.as_utc(current.expires_at) > now and not _holder_is_dead(current.holder):
            raise LockedError(
                f"{name} is held by {current.holder} since {clock.iso(current.acquired_at)}",
                hint="wait for that job to finish; a lease whose holder died expires by itself",
            )
        taken = session.execute(
            update(Lock)
            .where(Lock.name == name, Lock.holder == current.holder)
            .values(holder=holder, acquired_at=now, expires_at=now + ttl)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            raise LockedError(f"{name} was taken by another job just now", hint="try again later")


def renew(factory: sessionmaker[Session], name: str, holder: str, ttl: timedelta) -> bool:
    """Extend the lease; False if it is no longer ours."""
    with transaction(factory) as session:
        return renew_in(session, name, holder, ttl)


def renew_in(session: Session, name: str, holder: str, ttl: timedelta) -> bool:
    """`renew`, inside the caller's transaction."""
    result = session.execute(
        update(Lock).where(Lock.name == name, Lock.holder == holder).values(expires_at=clock.now() + ttl)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def holder_is_dead(holder: str) -> bool:
    """Whether the holder is a process of this host that is gone (it can never release its lease)."""
    return _holder_is_dead(holder)


def live_holders(session: Session) -> set[str]:
    """Holders of the leases that still count: not expired, and not held by a dead process here."""
    now = clock.now()
    return {
        lock.holder
        for lock in session.scalars(select(Lock))
        if clock.as_utc(lock.expires_at) > now and not _holder_is_dead(lock.holder)
    }


def release(factory: sessionmaker[Session], name: str, holder: str) -> None:
    with transaction(factory) as session:
        session.execute(delete(Lock).where(Lock.name == name, Lock.holder == holder))


class Lease:
    """A lease held for the life of a `with` block and renewed in the background every third of its ttl,
    so a long job keeps it while a dead one loses it when the ttl runs out. `check()` raises once a
    renewal found the lease taken (the job must stop before it does anything more)."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        name: str,
        ttl: timedelta,
        write_lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        self.factory, self.name, self.ttl = factory, name, ttl
        self.holder = new_holder()
        self._write_lock: AbstractContextManager[Any] = write_lock or threading.Lock()
        self._stop = threading.Event()
        self._lost = False
        self._thread: threading.Thread | None = None

    def take(self) -> None:
        """Acquire it (LockedError naming the holder if another has it) and start renewing it."""
        with self._write_lock:
            acquire(self.factory, self.name, self.holder, self.ttl)
        self._thread = threading.Thread(target=self._renew, name=f"lease-{self.name}", daemon=True)
        self._thread.start()

    def give_back(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._write_lock:
            release(self.factory, self.name, self.holder)

    def __enter__(self) -> Lease:
        self.take()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.give_back()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl.total_seconds() / 3):
            try:
                with self._write_lock:
                    if not renew(self.factory, self.name, self.holder, self.ttl):
                        self._lost = True
                        return
            except Exception as exc:  # a catalog hiccup: the next beat tries again before the ttl ends
                log.warning("lease %s not renewed: %s", self.name, exc)

    def check(self) -> None:
        if self._lost:
            raise LockedError(
                f"the lease {self.name} was lost (another job took it after a renewal failed)",
                hint="nothing more was done; run the job again",
            )
