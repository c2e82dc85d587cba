"""Faulty storage: a wrapper that fails chosen calls, to test how callers survive storage faults."""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import TypeVar

from app.errors import StorageError
from app.storage.base import Capabilities, ObjectInfo, PutOptions, Storage

T = TypeVar("T")

VERBS = ("put", "get", "stat", "list", "delete")

#: Which calls fail: {"put": 3} fails the 3rd put, {"put": {1, 2}} the first two, or a predicate
#: called with the verb and its 1-based call number.
FailOn = Mapping[str, int | Collection[int]] | Callable[[str, int], bool]


class FaultyStorage:
    """Storage that raises StorageError on chosen calls of `inner`, counting calls per verb.

    With `after=True` the fault strikes after `inner` did the work, as when a put lands but its answer
    is lost; otherwise before, as when the request never arrives.
    """

    def __init__(self, inner: Storage, fail_on: FailOn, *, after: bool = False) -> None:
        if isinstance(fail_on, Mapping):
            unknown = set(fail_on) - set(VERBS)
            if unknown:
                raise ValueError(f"unknown verbs {sorted(unknown)}; use {VERBS}")
        self.inner = inner
        self.fail_on = fail_on
        self.after = after
        self.calls: dict[str, int] = dict.fromkeys(VERBS, 0)
        self.faults: dict[str, int] = dict.fromkeys(VERBS, 0)
        self._lock = threading.Lock()
        self.capabilities: Capabilities = inner.capabilities

    @property
    def location(self) -> str:
        return self.inner.location

    def _should_fail(self, verb: str) -> bool:
        with self._lock:
            self.calls[verb] += 1
            number = self.calls[verb]
            if callable(self.fail_on):
                failing = self.fail_on(verb, number)
            else:
                chosen = self.fail_on.get(verb, ())
                failing = number == chosen if isinstance(chosen, int) else number in chosen
            if failing:
                self.faults[verb] += 1
            return failing

    def _fault(self, verb: str, what: str) -> StorageError:
        return StorageError(f"injected fault: {verb} of {what} in storage {self.location}")

    def _run(self, verb: str, what: str, fn: Callable[[], T]) -> T:
        failing = self._should_fail(verb)
        if failing and not self.after:
            raise self._fault(verb, what)
        result = fn()
        if failing:
            raise self._fault(verb, what)
        return result

    def put(self, kind: str, name: str, data: bytes | memoryview, options: PutOptions | None = None) -> None:
        self._run("put", f"{kind}/{name}", lambda: self.inner.put(kind, name, data, options))

    def get(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._run("get", f"{kind}/{name}", lambda: self.inner.get(kind, name, offset, length))

    def stat(self, kind: str, name: str) -> ObjectInfo | None:
        return self._run("stat", f"{kind}/{name}", lambda: self.inner.stat(kind, name))

    def list(self, kind: str, prefix: str = "") -> Iterator[ObjectInfo]:
        return iter(self._run("list", f"{kind}/{prefix}*", lambda: [*self.inner.list(kind, prefix)]))

    def delete(self, kind: str, name: str) -> None:
        self._run("delete", f"{kind}/{name}", lambda: self.inner.delete(kind, name))

    def close(self) -> None:
        self.inner.close()
