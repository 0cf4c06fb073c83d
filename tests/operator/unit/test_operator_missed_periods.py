"""Missed fire times and the catch-up plan: which periods run (oldest first, capped) and which are given up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from credit_jobs.domain.schedule import Schedule
from credit_operator.missed_periods import missed_fire_times, plan_catch_up

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def plan(
    anchor: datetime, max_periods: int = 3, covered: tuple[str, ...] = (), **kw: str
) -> tuple[list[str], list[str]]:
    result = plan_catch_up(
        schedule=Schedule.parse(kw.get("schedule", "0 0 1 * *"), kw.get("tz", "UTC"), kw.get("period", "monthly")),
        anchor=anchor,
        now=kw.get("now", NOW),  # type: ignore[arg-type]
        starting_deadline_seconds=3600,
        max_periods=max_periods,
        covered_keys=covered,
    )
    return [m.key for m in result.to_run], [m.key for m in result.given_up]


def test_nothing_is_missed_when_the_latest_fire_time_ran() -> None:
    assert plan(anchor=datetime(2026, 11, 1, tzinfo=UTC)) == ([], [])


def test_downtime_misses_every_fire_time_since_the_last_run_oldest_first() -> None:
    assert plan(anchor=datetime(2026, 9, 1, tzinfo=UTC)) == (["2026-10", "2026-11"], [])


def test_the_cap_keeps_the_newest_periods_and_gives_up_older_ones() -> None:
    to_run, given_up = plan(anchor=datetime(2026, 3, 1, tzinfo=UTC), max_periods=3)
    assert to_run == ["2026-09", "2026-10", "2026-11"]
    assert given_up == ["2026-04", "2026-05", "2026-06", "2026-07", "2026-08"]


def test_catch_up_off_gives_up_everything() -> None:
    assert plan(anchor=datetime(2026, 9, 1, tzinfo=UTC), max_periods=0) == ([], ["2026-10", "2026-11"])


def test_periods_already_run_by_another_job_are_not_missed() -> None:
    assert plan(anchor=datetime(2026, 8, 1, tzinfo=UTC), covered=("2026-10",)) == (["2026-09", "2026-11"], [])


def test_a_fire_time_within_its_starting_deadline_is_left_to_the_cronjob_controller() -> None:
    just_after = datetime(2026, 11, 1, 0, 30, tzinfo=UTC)  # 30 min after the fire, deadline is 1 h
    assert plan(anchor=datetime(2026, 10, 1, tzinfo=UTC), now=just_after) == ([], [])  # type: ignore[arg-type]
    later = datetime(2026, 11, 1, 1, 30, tzinfo=UTC)
    assert plan(anchor=datetime(2026, 10, 1, tzinfo=UTC), now=later) == (["2026-11"], [])  # type: ignore[arg-type]


def test_several_fires_in_one_period_make_one_missed_period_pinned_to_the_first() -> None:
    result = plan_catch_up(
        schedule=Schedule.parse("0 * * * *", "UTC", "daily"),
        anchor=datetime(2026, 11, 26, 22, 0, tzinfo=UTC),
        now=NOW,
        starting_deadline_seconds=600,
        max_periods=5,
    )
    assert [m.key for m in result.to_run] == ["2026-11-26", "2026-11-27", "2026-11-28"]
    assert result.to_run[1].fire_time == datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
    assert result.through == datetime(2026, 11, 28, 11, 0, tzinfo=UTC)


def test_fire_times_are_evaluated_in_the_time_zone() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    # 00:00 on 1 November in Shanghai is 16:00 UTC on 31 October: that fire belongs to November.
    to_run, _ = plan(anchor=datetime(2026, 10, 1, tzinfo=shanghai), tz="Asia/Shanghai")
    assert to_run == ["2026-11"]


@pytest.mark.parametrize("period", ["weekly", "hourly"])
def test_period_keys_follow_the_granularity(period: str) -> None:
    schedule = "0 0 * * 1" if period == "weekly" else "0 * * * *"
    anchor = NOW - (timedelta(days=15) if period == "weekly" else timedelta(hours=3, minutes=30))
    to_run, _ = plan(anchor=anchor, schedule=schedule, period=period, max_periods=10)
    expected = ["2026-W47", "2026-W48"] if period == "weekly" else ["2026-11-28T09+00:00", "2026-11-28T10+00:00"]
    assert to_run == expected


def test_an_every_minute_schedule_after_long_downtime_is_bounded() -> None:
    fires = missed_fire_times(Schedule.parse("* * * * *"), NOW - timedelta(days=60), NOW, 60)
    assert len(fires) == 5000
    assert fires[0] > fires[-1]  # newest first


def test_catch_up_sees_both_fires_of_the_repeated_hour_with_distinct_keys() -> None:
    # 2026-11-01 in New York: 01:00 EDT (05:00Z) and 01:00 EST (06:00Z) both fire (as the CronJob controller does).
    result = plan_catch_up(
        schedule=Schedule.parse("0 * * * *", "America/New_York", "hourly"),
        anchor=datetime(2026, 11, 1, 4, 30, tzinfo=UTC),
        now=datetime(2026, 11, 1, 8, 0, tzinfo=UTC),
        starting_deadline_seconds=600,
        max_periods=10,
    )
    assert [(m.key, m.fire_time) for m in result.to_run] == [
        ("2026-11-01T01-04:00", datetime(2026, 11, 1, 5, 0, tzinfo=UTC)),
        ("2026-11-01T01-05:00", datetime(2026, 11, 1, 6, 0, tzinfo=UTC)),
        ("2026-11-01T02-05:00", datetime(2026, 11, 1, 7, 0, tzinfo=UTC)),
    ]


def test_catch_up_does_not_miss_the_first_fire_of_a_fall_back_night() -> None:
    # Berlin, daily 02:30: at 01:10Z on 25 October the 02:30 CEST fire (00:30Z) has happened; croniter skipped it.
    result = plan_catch_up(
        schedule=Schedule.parse("30 2 * * *", "Europe/Berlin", "daily"),
        anchor=datetime(2026, 10, 24, 0, 30, tzinfo=UTC),
        now=datetime(2026, 10, 25, 1, 10, tzinfo=UTC),
        starting_deadline_seconds=600,
        max_periods=10,
    )
    assert [(m.key, m.fire_time) for m in result.to_run] == [("2026-10-25", datetime(2026, 10, 25, 0, 30, tzinfo=UTC))]
