"""What one verification checks: which backups, and how much of their data is read back."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.errors import ConfigurationError
from app.settings import Settings

#: How much data a run reads back (docs/VERIFY.md section 2).
DATA_NONE = "none"  # structure only: objects exist with the expected sizes
DATA_INCREMENTAL = "incremental"  # packs never read back, overdue ones, and a rotating share of the rest
DATA_SAMPLE = "sample"  # a share of the packs, least recently read first
DATA_ALL = "all"  # every pack the backups need
DATA_MODES = (DATA_NONE, DATA_INCREMENTAL, DATA_SAMPLE, DATA_ALL)


@dataclass(frozen=True)
class VerifyOptions:
    backup_ids: tuple[str, ...] = ()
    source: str | None = None
    since: datetime | None = None
    data: str = DATA_INCREMENTAL
    sample: float = 0.25
    #: Every pack is read back at least once within this period (incremental mode).
    period: timedelta = timedelta(days=30)
    #: How often the scheduled run comes: the rotating share is period / interval of the packs.
    interval: timedelta = timedelta(days=1)
    threads: int = 4
    max_bytes_per_second: int = 0
    seed: int | None = None

    def scope(self) -> dict[str, Any]:
        """JSON-ready, for the run's catalog row."""
        return {
            "backups": list(self.backup_ids),
            "source": self.source,
            "since": self.since.isoformat() if self.since else None,
            "data": self.data,
            "sample": self.sample if self.data == DATA_SAMPLE else None,
            "period_days": self.period.total_seconds() / 86400,
        }


def parse_sample(text: str) -> float:
    """`25%` or `0.25` as a share in (0, 1]."""
    value = text.strip()
    try:
        share = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        share = -1.0
    if not 0 < share <= 1:
        raise ConfigurationError(
            f"--sample {text!r} is not a share of the packs",
            hint="give a percentage such as 25% (1% to 100%)",
        )
    return share


def choose_packs(
    options: VerifyOptions, packs: Sequence[str], last_ok: dict[str, datetime], now: datetime
) -> list[str]:
    """The packs whose data this run reads back, in the order to read them (docs/VERIFY.md section 2)."""
    if options.data == DATA_NONE:
        return []
    if options.data == DATA_ALL:
        return sorted(packs)
    rng = random.Random(options.seed)
    # Least recently read first; never read first of all; ties in random order.
    never = datetime.min.replace(tzinfo=now.tzinfo)
    ordered = sorted(packs, key=lambda p: (last_ok.get(p, never), rng.random()))
    if options.data == DATA_SAMPLE:
        return ordered[: max(1, math.ceil(len(ordered) * options.sample))] if ordered else []
    due = [p for p in ordered if p not in last_ok or now - last_ok[p] >= options.period]
    overdue = set(due)
    rest = [p for p in ordered if p not in overdue]
    runs_per_period = max(1.0, options.period / options.interval)
    share = math.ceil(len(rest) / runs_per_period) if rest else 0
    return due + rest[:share]


def options_from_settings(settings: Settings, **chosen: Any) -> VerifyOptions:
    """The options of the settings (BACKUP_VERIFY_*), with the caller's choices over them."""
    base: dict[str, Any] = {
        "sample": settings.backup_verify_sample,
        "period": timedelta(days=settings.backup_verify_period_days),
        "threads": settings.backup_verify_threads,
        "max_bytes_per_second": settings.backup_verify_max_bytes_per_second,
    }
    base.update({k: v for k, v in chosen.items() if v is not None})
    if base.get("data", DATA_INCREMENTAL) not in DATA_MODES:
        raise ConfigurationError(
            f"unknown verification mode {base['data']!r}", hint=f"use one of {DATA_MODES}"
        )
    return VerifyOptions(**base)
