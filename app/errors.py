"""One hierarchy of domain errors: each says what went wrong, why, and what to do, never a secret.

Every error carries a message, an optional detail and hint, and the exit code the CLI returns.
"""

from __future__ import annotations


class EquisplitError(Exception):
    """Base of every error the domain raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, detail: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.hint = hint

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle whatever the subclass's constructor takes: errors cross process pools."""
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))

    def __str__(self) -> str:
        parts = [self.message]
        if self.detail:
            parts.append(f"detail: {self.detail}")
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)


def first_line(exc: BaseException) -> str:
    """The first line of an error from psycopg or a program: what to show as an error's `detail`."""
    return (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]


def _rebuild(cls: type[EquisplitError], args: tuple[object, ...], state: dict[str, object]) -> EquisplitError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class ConfigurationError(EquisplitError):
    """A setting is missing or malformed."""

    exit_code = 2


class MasterKeyError(EquisplitError):
    """The master key is missing, malformed or wrong."""

    exit_code = 3


class WrongKeyError(MasterKeyError):
    """The master key does not open the repository's keyring."""


class StorageError(EquisplitError):
    """Storage could not be reached or refused an operation."""

    exit_code = 4


class ObjectNotFoundError(StorageError):
    """An object the repository needs is missing from storage."""

    def __init__(
        self, kind: str, name: str, where: str, *, detail: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(
            f"object {kind}/{name} is missing from storage {where}",
            detail=detail,
            hint=hint
            or "run `equisplit-dr catalog rebuild` if the catalog is stale, "
            "or restore the object from a replica",
        )
        self.kind = kind
        self.name = name


class ReplicationError(StorageError):
    """A secondary region could not be brought up to date (docs/REPLICATION.md); retried."""


class IntegrityError(EquisplitError):
    """Stored data failed authentication or does not match what was expected."""

    exit_code = 5


class RepositoryError(EquisplitError):
    """The repository is missing, not initialised, or of an unknown format."""

    exit_code = 6


class CatalogError(EquisplitError):
    """The catalog is unreachable, not migrated, or inconsistent."""

    exit_code = 7


class SourceError(EquisplitError):
    """A backup source is unknown, missing or unreadable."""

    exit_code = 8


class BackupNotFoundError(EquisplitError):
    """No backup matches the id or selector given."""

    exit_code = 9


class JobNotFoundError(EquisplitError):
    """No job in the ledger has the id given."""

    exit_code = 9


class JobFinishedError(EquisplitError):
    """The job has already finished: there is nothing left to cancel."""

    exit_code = 17


class LockedError(EquisplitError):
    """Another job holds the lock this one needs."""

    exit_code = 10


class RestoreTargetError(EquisplitError):
    """The restore target is unsafe to write into."""

    exit_code = 11


class BackupFailedError(EquisplitError):
    """A backup could not complete."""

    exit_code = 12


class JobCancelledError(EquisplitError):
    """The job was cancelled by an operator."""

    exit_code = 13


class WalError(EquisplitError):
    """A WAL file cannot be archived or restored (docs/WAL.md)."""

    exit_code = 14


class WalConflictError(WalError):
    """A WAL file is already archived with different content."""


class WalNotFoundError(WalError):
    """The WAL file asked for is not in the archive: the end of it, or a probe. Quiet for PostgreSQL."""

    exit_code = 1


class RecoveryError(EquisplitError):
    """A point-in-time recovery cannot be planned, is refused, or failed (docs/PITR.md)."""

    exit_code = 15


class AlertDeliveryError(EquisplitError):
    """An alert channel (Sentry, SMTP, Slack, PagerDuty) did not take a message (docs/MONITORING.md).
    Its message names the channel and the answer, never the webhook, key or password."""

    exit_code = 1


class PartialBackupError(EquisplitError):
    """A backup finished `partial`: some files were not stored as the walk saw them, or the source shrank
    unconfirmed. Not raised by the domain (the backup is recorded and restorable): its exit code is
    what `backup run` exits with, after naming every file and why."""

    exit_code = 16


class AuditTrailError(EquisplitError):
    """The audit trail does not verify, or cannot be anchored or brought back (docs/AUDIT.md)."""

    exit_code = 18


class ApprovalError(EquisplitError):
    """A restore or deletion needs a second person's approval that is missing, unusable or one's own."""

    exit_code = 19


class ThawPendingError(StorageError):
    """Packs in an archive storage class (GLACIER, DEEP_ARCHIVE) are not readable yet: their restore
    (thaw) was requested, or requests are off, and did not finish in time (docs/ARCHIVE.md)."""

    exit_code = 23


class ErasureError(EquisplitError):
    """An erasure request could not be re-applied to a restored copy: it may still hold erased data."""

    exit_code = 20
