"""Run the `equisplit-dr` CLI with one step of its work struck down, for crash-safety tests:

    EQUISPLIT_TEST_STRIKE=VERB:WHAT:WHEN:HOW python -m tests.support.strike ARGS...

VERB:WHAT is `put:KIND/NAME` or `delete:KIND/NAME` (a call of the local storage backend),
`replace:FILENAME` (an os.replace onto a file of that name) or `audit:ACTION` (a catalog audit entry);
WHEN is `before` or `after` the real call; HOW is `kill` (SIGKILL of this process: no cleanup runs) or
`fail` (the error the real call would raise: StorageError, OSError or CatalogError). Test-only: nothing
in app/ knows of it.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from app.catalog import audit
from app.errors import CatalogError, StorageError
from app.storage.local import LocalStorage


def _strike(how: str, verb: str, what: str) -> None:
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if verb == "audit":
        raise CatalogError(f"injected fault: writing audit entry {what}")
    if verb == "replace":
        raise OSError(f"injected fault: replacing {what}")
    raise StorageError(f"injected fault: {verb} of {what}")


def _wrap(target: Any, attribute: str, matches: Any, when: str, how: str, verb: str, what: str) -> None:
    original = getattr(target, attribute)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        hit = matches(*args, **kwargs)
        if hit and when == "before":
            _strike(how, verb, what)
        result = original(*args, **kwargs)
        if hit and when == "after":
            _strike(how, verb, what)
        return result

    setattr(target, attribute, wrapper)


def install(spec: str) -> None:
    verb, what, when, how = spec.split(":")
    if verb in ("put", "delete"):
        _wrap(
            LocalStorage,
            verb,
            lambda _self, kind, name, *_a, **_k: f"{kind}/{name}" == what,
            when,
            how,
            verb,
            what,
        )
    elif verb == "replace":
        _wrap(os, "replace", lambda _src, dst, *_a, **_k: Path(dst).name == what, when, how, verb, what)
    elif verb == "audit":
        _wrap(audit, "append", lambda _session, action, *_a, **_k: action == what, when, how, verb, what)
    else:
        raise ValueError(f"unknown strike {spec}")


if __name__ == "__main__":
    install(os.environ["EQUISPLIT_TEST_STRIKE"])
    from app.cli.main import main

    sys.argv = ["equisplit-dr", *sys.argv[1:]]
    main()
