"""Retrying storage: a wrapper that repeats a verb after a transient StorageError, with backoff."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from app.errors import ObjectNotFoundError, StorageError
from app.storage.base import Capabilities, ObjectInfo, PutOptions, Storage

log = logging.getLogger(__name__)

T = TypeVar("T")

# The attribute a backend sets on a StorageError that repeating cannot fix (a missing bucket, a refused
# credential, an invalid name). Errors without it are treated as transient.
_TRANSIENT_ATTR = "transient"


def permanent(error: StorageError) -> StorageError:
    """Mark `error` as one that retrying cannot fix, and return it."""
    setattr(error, _TRANSIENT_ATTR, False)
    return error


def is_transient(error: BaseException) -> bool:
    """Whether repeating the call that raised `error` may succeed."""
    if not isinstance(error, StorageError) or isinstance(error, ObjectNotFoundError):
        return False
    return bool(getattr(error, _TRANSIENT_ATTR, True))


class RetryingStorage:
    """Storage that retries transient errors of `inner` up to `attempts` calls in all.

    The delay before retry n (1-based) is `min(max_delay, base_delay * 2**(n-1))`, half of it fixed and
    half random, so that many workers failing together do not retry together.
    """

    def __init__(
        self,
        inner: Storage,
        attempts: int = 5,
        base_delay: float = 0.2,
        max_delay: float = 5.0,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.inner = inner
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.capabilities: Capabilities = inner.capabilities

    @property
    def location(self) -> str:
        return self.inner.location

    def _delay(self, retry: int) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (retry - 1))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _call(self, verb: str, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except StorageError as error:
                if attempt == self.attempts or not is_transient(error):
                    raise
                delay = self._delay(attempt)
                log.warning(
                    "storage %s of %s failed (attempt %d of %d), retrying in %.2fs: %s",
                    verb,
                    what,
                    attempt,
                    self.attempts,
                    delay,
                    error.message,
                )
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def put(self, kind: str, name: str, data: bytes | memoryview, options: PutOptions | None = None) -> None:
        self._call("put", f"{kind}/{name}", lambda: self.inner.put(kind, name, data, options))

    def get(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._call("get", f"{kind}/{name}", lambda: self.inner.get(kind, name, offset, length))

    def stat(self, kind: str, name: str) -> ObjectInfo | None:
        return self._call("stat", f"{kind}/{name}", lambda: self.inner.stat(kind, name))

    def list(self, kind: str, prefix: str = "") -> Iterator[ObjectInfo]:
        # A listing that fails half way is retried whole, so it is collected before it is returned.
        return iter(self._call("list", f"{kind}/{prefix}*", lambda: [*self.inner.list(kind, prefix)]))

    def delete(self, kind: str, name: str) -> None:
        self._call("delete", f"{kind}/{name}", lambda: self.inner.delete(kind, name))

    def close(self) -> None:
        self.inner.close()
