"""PackCheck on remote storage: one listing answers for every pack when it is short enough, each pack is
asked (a stat) when the repository holds more packs than the stats' rounds would cover."""

from __future__ import annotations

import dataclasses

from app.backup.packcheck import LIST_PAGE, PackCheck
from app.repo.format import Kind
from app.storage.memory import MemoryStorage
from tests.unit.repo.support import RecordingStorage


def remote_with_packs(count: int) -> RecordingStorage:
    memory = MemoryStorage()
    for n in range(count):
        memory.put(Kind.PACKS, f"{n:064x}", b"pack")
    recording = RecordingStorage(memory)
    recording.capabilities = dataclasses.replace(memory.capabilities, remote=True)
    return recording


def test_one_listing_answers_for_every_pack_and_later_questions() -> None:
    storage = remote_with_packs(40)
    check = PackCheck(storage)  # type: ignore[arg-type]
    gone = "f" * 64
    assert check.missing([f"{n:064x}" for n in range(30)] + [gone]) == {gone}
    assert check.missing([f"{39:064x}", "e" * 64]) == {"e" * 64}  # from the same listing
    assert [verb for verb, _, _ in storage.calls] == ["list"]


def test_a_repository_with_more_packs_than_the_rounds_cover_is_asked_pack_by_pack() -> None:
    storage = remote_with_packs(LIST_PAGE + 1)  # 2 packs asked: one round of stats, one page allowed
    check = PackCheck(storage)  # type: ignore[arg-type]
    assert check.missing([f"{0:064x}", "f" * 64]) == {"f" * 64}
    assert sorted(verb for verb, _, _ in storage.calls) == ["list", "stat", "stat"]


def test_local_storage_is_stat_ed() -> None:
    memory = MemoryStorage()
    memory.put(Kind.PACKS, "a" * 64, b"pack")
    storage = RecordingStorage(memory)
    assert PackCheck(storage).missing(["a" * 64, "b" * 64]) == {"b" * 64}  # type: ignore[arg-type]
    assert sorted(verb for verb, _, _ in storage.calls) == ["stat", "stat"]
