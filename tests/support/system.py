"""BackupSystem fixtures: a fresh catalog, repository and master key per test, on chosen backends."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.settings import Settings, load_settings
from app.system import BackupSystem

Factory = Callable[..., BackupSystem]


def settings_for(
    home: Path,
    *,
    catalog: str | None = None,
    storage: str | None = None,
    key: str | None = None,
    **extra: Any,
) -> Settings:
    return load_settings(
        equisplit_dr_home=home,
        database_url=catalog,
        backup_storage_url=storage,
        backup_encryption_key=key or secrets.token_hex(32),
        backup_encryption_key_file=None,
        backup_threads=4,
        **extra,
    )


@pytest.fixture
def make_system(tmp_path: Path) -> Iterator[Factory]:
    """Build initialised systems; all are closed at the end of the test."""
    made: list[BackupSystem] = []

    def factory(*, init: bool = True, **kwargs: Any) -> BackupSystem:
        kwargs.setdefault("catalog", None)
        s = BackupSystem(settings_for(kwargs.pop("home", tmp_path / "home"), **kwargs), actor="test")
        made.append(s)
        if init:
            s.init()
        return s

    yield factory
    for s in made:
        s.close()


@pytest.fixture
def system(make_system: Factory) -> BackupSystem:
    """Embedded defaults: SQLite catalog and local storage."""
    return make_system()


@pytest.fixture(
    params=["sqlite-local", pytest.param("postgres-s3", marks=[pytest.mark.postgres, pytest.mark.s3])]
)
def system_any_backend(request: pytest.FixtureRequest, make_system: Factory) -> BackupSystem:
    """The embedded defaults, then PostgreSQL + S3 through moto's server."""
    if request.param == "sqlite-local":
        return make_system()
    return make_system(
        catalog=request.getfixturevalue("fresh_pg_url"), storage=request.getfixturevalue("s3_bucket_url")
    )
