"""Fixtures for the repository unit tests: seeded data, a master key, a repository in memory."""

from __future__ import annotations

import random

import pytest

from app.repo.keys import MasterKey
from app.repo.repository import Repository
from app.storage.memory import MemoryStorage
from tests.unit.repo.support import SEED, SMALL_CHUNKS, random_hex


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A generator seeded from SEED and the test's name: reproducible, and different per test."""
    return random.Random(f"{SEED}/{request.node.nodeid}")


@pytest.fixture
def master(rng: random.Random) -> MasterKey:
    return MasterKey.from_hex(random_hex(rng, 32), origin="test")


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def repo(storage: MemoryStorage, master: MasterKey) -> Repository:
    return Repository.init(storage, master, chunker=SMALL_CHUNKS)
