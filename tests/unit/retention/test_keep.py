"""Why each backup is kept (app/retention/keep.py): GFS as restic's forget --keep-*, a minimum count, a
keep-within window measured from the newest backup, archives for years, holds, the PITR window; and no
clock in the future or burst of damaged backups makes it keep less."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.retention.keep import Candidate, keep_reasons
from app.retention.policy import RetentionPolicy

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def daily_backups(days: int, every: int = 1, source: str = "docs", **kw: object) -> list[Candidate]:
    return [
        Candidate(f"{source}-{d:04d}", source, "full", NOW - timedelta(days=d, hours=1), **kw)  # type: ignore[arg-type]
        for d in range(0, days, every)
    ]


def kept(reasons: dict[str, list[str]]) -> set[str]:
    return {i for i, r in reasons.items() if r}


def test_gfs_keeps_the_newest_of_each_period_and_deletes_the_rest() -> None:
    backups = daily_backups(800)
    policy = RetentionPolicy(
        daily=7, weekly=4, monthly=12, yearly=3, minimum=1, within=timedelta(0), pitr_window=timedelta(0)
    )
    reasons = keep_reasons(backups, policy, NOW)
    daily = {i for i, r in reasons.items() if any(x.startswith("daily") for x in r)}
    assert daily == {f"docs-{d:04d}" for d in range(7)}
    assert sum(1 for r in reasons.values() if any(x.startswith("weekly") for x in r)) == 4
    assert sum(1 for r in reasons.values() if any(x.startswith("monthly") for x in r)) == 12
    yearly = sorted(i for i, r in reasons.items() if any(x.startswith("yearly") for x in r))
    assert len(yearly) == 3  # 2026, 2025, 2024: the newest of each
    assert len(kept(reasons)) < 30 and "docs-0799" not in kept(reasons)


def test_several_backups_a_day_keep_only_the_newest_of_that_day() -> None:
    backups = [Candidate(f"b{h}", "docs", "incremental", NOW - timedelta(hours=h)) for h in range(0, 72, 6)]
    policy = RetentionPolicy(
        daily=3, weekly=0, monthly=0, yearly=0, minimum=1, within=timedelta(0), pitr_window=timedelta(0)
    )
    # NOW is 12:00: today's newest is b0, yesterday's b18 (18:00), the day before's b42
    assert kept(keep_reasons(backups, policy, NOW)) == {"b0", "b18", "b42"}


def test_days_without_backups_do_not_use_up_a_rule() -> None:
    backups = daily_backups(90, every=3)  # 30 backups over 90 days
    policy = RetentionPolicy(
        daily=30, weekly=0, monthly=0, yearly=0, minimum=1, within=timedelta(0), pitr_window=timedelta(0)
    )
    assert kept(keep_reasons(backups, policy, NOW)) == {b.id for b in backups}


def test_a_clock_in_the_future_keeps_exactly_as_much() -> None:
    backups = daily_backups(400)
    policy = RetentionPolicy(daily=30, weekly=12, monthly=12, yearly=7, minimum=3, within=timedelta(days=2))
    honest = kept(keep_reasons(backups, policy, NOW))
    assert kept(keep_reasons(backups, policy, NOW + timedelta(days=3650))) == honest
    assert {"docs-0000", "docs-0001", "docs-0002"} <= honest


def test_damaged_backups_never_fill_a_rule_and_a_burst_of_them_cannot_undercut() -> None:
    damaged = [
        Candidate(f"bad{h}", "docs", "full", NOW - timedelta(hours=h), damaged=True) for h in range(1, 20)
    ]
    whole = daily_backups(10, every=1)[2:]  # the newest whole backup is two days old
    policy = RetentionPolicy(
        daily=3, weekly=0, monthly=0, yearly=0, minimum=3, within=timedelta(0), pitr_window=timedelta(0)
    )
    reasons = keep_reasons(damaged + whole, policy, NOW)
    assert {"docs-0002", "docs-0003", "docs-0004"} <= kept(reasons)
    assert not any(reasons[f"bad{h}"] for h in range(1, 20))


def test_holds_archives_and_future_dates_are_kept() -> None:
    old = NOW - timedelta(days=6 * 365)
    backups = [
        Candidate("new", "docs", "full", NOW),
        Candidate("held", "docs", "full", NOW - timedelta(days=3000), hold="#1 matter 114"),
        Candidate("archive", "docs", "archive", old),
        Candidate("ancient-archive", "docs", "archive", NOW - timedelta(days=8 * 365)),
        Candidate("future", "docs", "full", NOW + timedelta(days=2)),
        Candidate("plain-old", "docs", "full", old),
    ]
    policy = RetentionPolicy(
        daily=1, weekly=0, monthly=0, yearly=0, minimum=1, within=timedelta(0), pitr_window=timedelta(0)
    )
    reasons = keep_reasons(backups, policy, NOW)
    assert reasons["held"] == ["legal hold: #1 matter 114"]
    assert reasons["archive"] == ["archive, kept 7 years"]
    assert reasons["future"][0].startswith("dated after now")
    assert reasons["ancient-archive"] == [] and reasons["plain-old"] == []


def test_sources_and_logical_exports_are_separate_series() -> None:
    backups = daily_backups(5, source="a") + daily_backups(5, source="b")
    backups.append(Candidate("dump", "a", "logical", NOW - timedelta(days=100)))
    policy = RetentionPolicy(
        daily=1, weekly=0, monthly=0, yearly=0, minimum=1, within=timedelta(0), pitr_window=timedelta(0)
    )
    assert kept(keep_reasons(backups, policy, NOW)) == {"a-0000", "b-0000", "dump"}


def test_the_pitr_window_keeps_every_base_inside_and_the_one_before() -> None:
    bases = [
        Candidate(
            f"pg{d}",
            "db",
            "full",
            NOW - timedelta(days=d),
            postgres_stopped_at=NOW - timedelta(days=d, minutes=-5),
        )
        for d in (1, 10, 29, 31, 40, 60)
    ]
    policy = RetentionPolicy(
        daily=1, weekly=0, monthly=0, yearly=0, minimum=1, within=timedelta(0), pitr_window=timedelta(days=30)
    )
    reasons = keep_reasons(bases, policy, NOW)
    # the window reaches 30 days back from the newest backup (pg1): pg31 ended inside it, pg40 is the
    # base a recovery to its first moment starts from, pg60 is needed by nothing
    assert kept(reasons) == {"pg1", "pg10", "pg29", "pg31", "pg40"}
    assert any("window's start" in r for r in reasons["pg40"])


def test_a_run_of_partial_backups_cannot_push_out_whole_ones() -> None:
    """An unmounted disk backed up as partial, day after day: the whole backups before stay kept."""
    partial = [
        Candidate(f"empty{d}", "docs", "full", NOW - timedelta(days=d), partial=True) for d in range(10)
    ]
    whole = [Candidate(f"whole{d}", "docs", "full", NOW - timedelta(days=d)) for d in range(10, 14)]
    policy = RetentionPolicy(
        daily=3,
        weekly=0,
        monthly=0,
        yearly=0,
        minimum=2,
        within=timedelta(hours=12),
        pitr_window=timedelta(0),
    )
    reasons = keep_reasons(partial + whole, policy, NOW)
    assert {"whole10", "whole11", "whole12"} <= kept(reasons)
    assert kept(reasons) - {"whole10", "whole11", "whole12"} == {"empty0"}  # within 12 h of the newest
