"""Which packs a verification reads back: all, a sample, or the incremental rotation."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from app.errors import ConfigurationError
from app.verify.options import VerifyOptions, choose_packs, parse_sample

NOW = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)
PACKS = [f"{i:064x}" for i in range(60)]


def test_all_reads_every_pack_and_none_reads_nothing() -> None:
    assert choose_packs(VerifyOptions(data="all"), PACKS, {}, NOW) == sorted(PACKS)
    assert choose_packs(VerifyOptions(data="none"), PACKS, {}, NOW) == []


def test_a_sample_takes_the_least_recently_read_share_first() -> None:
    last = {p: NOW - timedelta(days=i % 10) for i, p in enumerate(PACKS)}
    chosen = choose_packs(VerifyOptions(data="sample", sample=0.25, seed=1), PACKS, last, NOW)
    assert len(chosen) == 15
    assert min(NOW - last[p] for p in chosen) >= max(NOW - last[p] for p in PACKS if p not in chosen)


def test_incremental_reads_new_and_overdue_packs_and_a_rotating_share() -> None:
    fresh = {p: NOW - timedelta(days=1) for p in PACKS[:40]}
    overdue = {p: NOW - timedelta(days=31) for p in PACKS[40:50]}
    chosen = choose_packs(VerifyOptions(seed=2), PACKS, {**fresh, **overdue}, NOW)
    assert set(PACKS[40:60]) <= set(chosen)  # ten overdue, ten never read back
    rotating = set(chosen) - set(PACKS[40:60])
    assert len(rotating) == 2  # 40 read recently, one 30th of them a day: every pack within 30 days


def test_daily_rotation_reads_every_pack_within_the_period() -> None:
    last: dict[str, datetime] = {}
    options = VerifyOptions(seed=3)
    seen_at: dict[str, list[datetime]] = {p: [] for p in PACKS}
    for day in range(90):
        now = NOW + timedelta(days=day)
        for p in choose_packs(options, PACKS, last, now):
            last[p] = now
            seen_at[p].append(now)
    for p, days in seen_at.items():
        gaps = [b - a for a, b in itertools.pairwise(days)]
        assert days and max(gaps, default=timedelta(0)) <= timedelta(days=30), p


@pytest.mark.parametrize("text, share", [("25%", 0.25), ("100%", 1.0), ("0.5", 0.5)])
def test_sample_shares(text: str, share: float) -> None:
    assert parse_sample(text) == share


@pytest.mark.parametrize("text", ["0%", "150%", "abc", "-1"])
def test_bad_sample_is_refused_with_the_fix(text: str) -> None:
    with pytest.raises(ConfigurationError, match="25%"):
        parse_sample(text)
