"""What a finished backup reports, and which of its warnings make it `partial`."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Codes of the warnings that make a backup `partial` (docs/BACKUP.md): a file that vanished or was
#: replaced after the walk (app/sources/confined.py), a source that shrank unconfirmed (app/backup/shrink.py).
PARTIAL_CODES = frozenset({"vanished", "replaced", "swapped", "shrunk"})


def is_partial(errors: list[dict[str, str]], warnings: list[dict[str, str]]) -> bool:
    """A backup is partial when a file could not be read, or a warning says it is not what was asked."""
    return bool(errors) or any(w.get("code") in PARTIAL_CODES for w in warnings)


@dataclass
class BackupResult:
    """`state` is `complete` or `partial`; `errors` name the files not read, `warnings` the rest (a
    warning's `code`, when it has one, says why: PARTIAL_CODES make the backup partial)."""

    id: str
    source: str
    type: str
    state: str
    parent_id: str | None
    stats: dict[str, int]
    errors: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    job_id: str | None = None

    @property
    def is_partial(self) -> bool:
        return self.state == "partial"
