"""The settings object: names from the spec, malformed values named, derived defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.errors import ConfigurationError
from app.settings import load_settings


def test_a_relative_home_gives_absolute_embedded_locations(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(equisplit_dr_home=Path("rel-home"))
    assert settings.home == tmp_path / "rel-home"
    assert settings.storage_url == (tmp_path / "rel-home" / "repo").as_uri()
    assert settings.catalog_url == f"sqlite:///{tmp_path / 'rel-home' / 'catalog.sqlite3'}"


def test_secondary_regions_map_and_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SECONDARY_REGIONS", "us-west-2,eu-west-1")
    monkeypatch.setenv("BACKUP_SECONDARY_STORAGE_URLS", "us-west-2=s3://bucket/dr?region=us-west-2")
    urls = load_settings(equisplit_dr_home=tmp_path).secondary_storage_urls
    assert urls == {
        "us-west-2": "s3://bucket/dr?region=us-west-2",
        "eu-west-1": (tmp_path / "regions" / "eu-west-1").as_uri(),
    }


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BACKUP_RETENTION_DAILY", "thirty"),
        ("BACKUP_SECONDARY_STORAGE_URLS", "us-west-2"),
        ("BACKUP_SCHEDULE_FULL", "0 25 * * *"),
        ("SCHEDULE_TIMEZONE", "Mars/Olympus"),
        ("BACKUP_COMPRESSION_LEVEL", "40"),
        ("BACKUP_REPLICATION_LAG_TARGET", "0"),
        ("BACKUP_REPLICATION_CONCURRENCY", "0"),
        ("BACKUP_REPLICATION_INTERVAL", "10"),
        ("BACKUP_SHRINK_WARN_PERCENT", "150"),
        ("BACKUP_SHRINK_WARN_PERCENT", "half"),
        ("BACKUP_ARCHIVE_STORAGE_CLASS", "SNOW"),
        ("BACKUP_THAW_TIER", "Fast"),
        ("BACKUP_THAW_DAYS", "0"),
    ],
)
def test_a_malformed_value_names_its_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        load_settings()


def test_a_secret_value_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DR_SLACK_WEBHOOK", "https://hooks.example/secret-token")
    monkeypatch.setenv("BACKUP_RETENTION_WEEKLY", "-1")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "secret-token" not in str(caught.value)


def test_restore_roots_from_the_environment_or_under_the_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load_settings(equisplit_dr_home=tmp_path).restore_roots == [tmp_path / "restores"]
    monkeypatch.setenv("BACKUP_RESTORE_ROOTS", "/srv/restores, /mnt/dr")
    assert load_settings(equisplit_dr_home=tmp_path).restore_roots == [Path("/srv/restores"), Path("/mnt/dr")]
    monkeypatch.setenv("BACKUP_RESTORE_ROOTS", "srv/restores")
    with pytest.raises(ConfigurationError, match="BACKUP_RESTORE_ROOTS"):
        load_settings()


def test_message_signing_needs_key_certificate_and_store_together(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not load_settings().message_signing
    monkeypatch.setenv("CELERY_SECURITY_KEY", "/etc/equisplit-dr/worker.key")
    monkeypatch.setenv("CELERY_SECURITY_CERTIFICATE", "/etc/equisplit-dr/worker.pem")
    with pytest.raises(ConfigurationError, match="CELERY_SECURITY_CERT_STORE not set"):
        load_settings()
    monkeypatch.setenv("CELERY_SECURITY_CERT_STORE", "/etc/equisplit-dr/trusted")
    assert load_settings().message_signing


def test_region_retention_overrides_the_primary_policy_per_region(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from datetime import timedelta

    from app.retention.policy import RetentionPolicy

    monkeypatch.setenv("SECONDARY_REGIONS", "us-west-2,eu-central-1")
    monkeypatch.setenv("BACKUP_RETENTION_YEARLY", "7")
    monkeypatch.setenv(
        "BACKUP_REGION_RETENTION",
        "us-west-2: yearly=10, archive_years=10 ; eu-central-1:daily=7,pitr_window_days=3",
    )
    settings = load_settings(equisplit_dr_home=tmp_path)
    west = RetentionPolicy.for_region(settings, "us-west-2")
    assert (west.yearly, west.archive_years, west.daily) == (10, 10, 30)
    central = RetentionPolicy.for_region(settings, "eu-central-1")
    assert (central.daily, central.yearly, central.pitr_window) == (7, 7, timedelta(days=3))
    assert RetentionPolicy.for_region(settings, "elsewhere") == RetentionPolicy.from_settings(settings)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("us-west-2=yearly=10", "is not region:rule=N"),
        ("us-west-2:forever=1", "unknown rule 'forever'"),
        ("us-west-2:yearly=ten", "yearly needs a whole number"),
        ("us-west-2:yearly=-1", "yearly needs a whole number"),
        ("us-west-2:minimum=0", "minimum must be at least 1"),
        ("us-west-2:daily=1;us-west-2:weekly=1", "given twice"),
        ("mars-1:daily=1", "mars-1 that are not secondary regions"),
    ],
)
def test_a_malformed_region_retention_is_refused_naming_the_variable_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    monkeypatch.setenv("BACKUP_REGION_RETENTION", value)
    with pytest.raises(ConfigurationError, match="BACKUP_REGION_RETENTION") as caught:
        load_settings()
    assert says in str(caught.value)


@pytest.mark.parametrize("storage_class", ["GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"])
def test_archive_classes_that_need_a_thaw_are_accepted(monkeypatch: pytest.MonkeyPatch, storage_class: str) -> None:
    monkeypatch.setenv("BACKUP_ARCHIVE_STORAGE_CLASS", storage_class)
    assert load_settings().backup_archive_storage_class == storage_class
