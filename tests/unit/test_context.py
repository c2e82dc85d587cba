"""A worker process's context opens the repository from what the job's process read (Handoff)."""

from __future__ import annotations

import dataclasses

from app.context import Context
from app.repo.keys import Keyring, MasterKey
from app.system import BackupSystem


def test_a_worker_opens_the_repository_without_reading_storage(system: BackupSystem) -> None:
    ctx = system.context
    opened = ctx.repository
    handoff = ctx.handoff()
    assert handoff.keyring_blob is not None and handoff.config == opened.config
    keyring = system.settings.home / "repo" / "keys" / "keyring"
    keyring.rename(keyring.with_name("moved-away"))  # a read of it would now fail
    worker = Context.from_handoff(handoff)
    try:
        assert worker.repository.id == opened.id
        assert worker.repository.keyring.current_key_id == opened.keyring.current_key_id
        assert worker.repository.master_source is not None  # a later rotation is followed as anywhere
    finally:
        worker.close()


def test_a_worker_reads_the_keyring_itself_when_its_key_does_not_open_the_handed_one(
    system: BackupSystem,
) -> None:
    ctx = system.context
    opened = ctx.repository
    foreign = Keyring.create(opened.id).seal(MasterKey.generate())  # e.g. a rotation finished since
    worker = Context.from_handoff(dataclasses.replace(ctx.handoff(), keyring_blob=foreign))
    try:
        assert worker.repository.keyring.current_key_id == opened.keyring.current_key_id
    finally:
        worker.close()


def test_a_context_that_opened_nothing_hands_off_settings_alone(system: BackupSystem) -> None:
    fresh = Context(system.settings)
    try:
        handoff = fresh.handoff()
        assert handoff.keyring_blob is None and handoff.config is None
        assert handoff.storage_url == system.settings.storage_url
        worker = Context.from_handoff(handoff)
        assert worker.repository.id == system.context.repository.id
        worker.close()
    finally:
        fresh.close()


def test_the_first_catalog_write_of_a_cli_process_under_the_write_lock_does_not_deadlock(
    system: BackupSystem,
) -> None:
    """`with ctx.catalog_write_lock, transaction(ctx.sessions)` opened the catalog under the lock, and
    auditing the process's configuration there took the same lock again: `hold add` hung forever."""
    import threading

    from app.catalog.db import transaction
    from app.catalog.models import LegalHold

    ctx = Context(system.settings)
    ctx.process = "cli"  # audits its configuration when the catalog is first opened
    done = threading.Event()

    def first_write() -> None:
        with ctx.catalog_write_lock, transaction(ctx.sessions) as session:
            session.query(LegalHold).count()
        done.set()

    worker = threading.Thread(target=first_write, daemon=True)
    try:
        worker.start()
        worker.join(60)  # a deadlock never ends: give up waiting, and fail
        assert done.is_set(), "the first catalog write under the write lock deadlocked"
    finally:
        if done.is_set():
            ctx.close()
