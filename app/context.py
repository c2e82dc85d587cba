"""What a process needs to work on one repository: settings, catalog, storage and keys, opened lazily."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.catalog.db import catalog_role, make_engine, require_migrated, session_factory, transaction
from app.errors import RepositoryError, WrongKeyError
from app.repo.keys import MasterKey, load_master_key
from app.repo.repository import Repository
from app.repo.rotation import open_repository
from app.settings import Settings, region_url
from app.storage import Storage, open_storage


@dataclass(frozen=True)
class Handoff:
    """What a job's worker process (app/forkserver.py) takes from the job's process to work on the same
    repository: the settings, the region, and the keyring object and config that process read, so the
    worker opens the repository without reading either again (two GETs per worker on S3)."""

    settings: Settings
    region: str | None
    #: The storage the repository is in (the primary's or the region's).
    storage_url: str
    keyring_blob: bytes | None = None
    config: dict[str, Any] | None = None
    #: The job's process kind (Context.process): a worker's worker processes take its catalog role.
    process: str | None = None


class Context:
    """One per process (or per test); thread-safe after construction.

    With `region`, storage is that secondary region's copy of the repository (docs/REPLICATION.md
    section 7): the same catalog and master key, nothing read from the primary's storage.
    """

    def __init__(self, settings: Settings, *, region: str | None = None) -> None:
        self.settings = settings
        self.region = region
        if region is not None:
            region_url(settings, region)  # an unknown region stops here, naming the configured ones
        #: Serialises catalog writes from upload threads; SQLite allows one writer at a time. Re-entrant:
        #: the catalog is often first opened under it (`with lock, transaction(ctx.sessions)`), and
        #: opening it audits this process's configuration under the same lock.
        self.catalog_write_lock = threading.RLock()
        self._handed: tuple[bytes, dict[str, Any]] | None = None
        #: The kind of process ("cli", "worker"), set before the catalog is first opened: its configuration
        #: is audited then (docs/AUDIT.md section 6), and a worker takes the catalog's worker role
        #: (section 4). None: neither (the Python API, a WAL push).
        self.process: str | None = None
        #: Whether this process's configuration is still to be compared with the recorded one.
        self.audits_configuration = True

    def handoff(self) -> Handoff:
        """What a worker process needs to open this context's repository as it is open here."""
        repo = self.__dict__.get("repository")
        if repo is None or repo.keyring_blob is None:
            return Handoff(self.settings, self.region, self.storage_url, process=self.process)
        return Handoff(
            self.settings, self.region, self.storage_url, repo.keyring_blob, repo.config, process=self.process
        )

    @classmethod
    def from_handoff(cls, handoff: Handoff) -> Context:
        """A worker process's context: the same settings and region, and the repository as the job's
        process opened it (read again from storage only if this process's master key does not open
        that keyring, e.g. a key rotation finished in between)."""
        ctx = cls(handoff.settings, region=handoff.region)
        ctx.process = handoff.process  # a worker's worker takes its catalog role too
        ctx.audits_configuration = False  # the job's process compared it
        if handoff.keyring_blob is not None and handoff.config is not None:
            ctx._handed = (handoff.keyring_blob, handoff.config)
        return ctx

    @cached_property
    def engine(self) -> Engine:
        role, required = catalog_role(self.settings, self.process)
        return make_engine(self.settings.catalog_url, role=role, role_required=required)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        require_migrated(self.engine)
        factory = session_factory(self.engine)
        if self.process is not None and self.audits_configuration:
            self._record_configuration(factory, self.process)
        return factory

    def record_configuration(self) -> None:
        """Audit this process's configuration now (a catalog rebuild does it once the trail is back)."""
        if self.process is not None and self.audits_configuration:
            self._record_configuration(self.sessions, self.process)

    def _record_configuration(self, factory: sessionmaker[Session], process: str) -> None:
        from app.audit.config import record_configuration

        # Not under catalog_write_lock: the first catalog use is often `with ctx.catalog_write_lock,
        # transaction(ctx.sessions)`, which holds it while this runs (the lock is not reentrant).
        with transaction(factory) as session:
            record_configuration(session, self.settings, process)

    @property
    def storage_url(self) -> str:
        """The URL of the storage this context reads: the primary's, or the region's."""
        if self.region is None:
            return self.settings.storage_url
        return region_url(self.settings, self.region)

    @cached_property
    def storage(self) -> Storage:
        return open_storage(self.storage_url)

    def master_key(self) -> MasterKey:
        secret = self.settings.backup_encryption_key
        return load_master_key(
            secret.get_secret_value() if secret is not None else None,
            self.settings.backup_encryption_key_file,
            self.settings.default_key_file,
        )

    @cached_property
    def repository(self) -> Repository:
        """Opened with the master key; a key rotation stopped after its switch is finished here when
        the key comes from the default key file and this is the primary (app/repo/rotation.py)."""
        s = self.settings
        if self._handed is not None:
            try:
                repo = Repository.adopt(self.storage, self.master_key(), *self._handed)
            except WrongKeyError:
                pass  # opened below, as any process opens it
            else:
                repo.master_source = self.master_key
                return repo
        default_key = s.backup_encryption_key is None and s.backup_encryption_key_file is None
        try:
            return open_repository(
                self.storage,
                self.master_key,
                s.backup_encryption_key_file or s.default_key_file,
                may_finish=default_key and self.region is None,
                cache_root=s.cache_dir,
            )
        except RepositoryError as exc:
            if self.region is None:
                raise
            raise RepositoryError(
                f"region {self.region}: {exc.message}",
                detail=exc.detail,
                hint=f"copy the repository there first: `equisplit-dr replication run --region {self.region}`; "
                "`equisplit-dr replication status` shows what is still missing",
            ) from None

    def refresh_keys(self) -> None:
        """Adopt a rotated keyring before sealing anything new, if the repository is open (one GET)."""
        if "repository" in self.__dict__:
            self.repository.refresh_keys()

    def close(self) -> None:
        if "storage" in self.__dict__:
            self.storage.close()
        if "engine" in self.__dict__:
            self.engine.dispose()
