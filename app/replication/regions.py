"""The secondary regions replication copies to: names and storage URLs from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from app.settings import Settings
from app.storage import redact_url


@dataclass(frozen=True)
class Region:
    name: str
    url: str

    @property
    def location(self) -> str:
        """The URL without any credential, for messages."""
        return redact_url(self.url)


def is_enabled(settings: Settings) -> bool:
    """Whether anything is to be replicated: BACKUP_CROSS_REGION on and at least one region."""
    return settings.backup_cross_region and bool(settings.secondary_storage_urls)


def configured_regions(settings: Settings, only: str | None = None) -> list[Region]:
    """Every secondary region (or the one named; an unknown name is a ConfigurationError)."""
    from app.settings import region_url

    if only is not None:
        return [Region(only, region_url(settings, only))]
    return [Region(name, url) for name, url in sorted(settings.secondary_storage_urls.items())]
