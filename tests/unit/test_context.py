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
