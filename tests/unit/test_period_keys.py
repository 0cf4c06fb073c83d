"""Period keys come from the scheduled time in the schedule's time zone, never from the wall clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.period_keys import (
    Period,
    parse_period,
    parse_time_zone,
    period_start,
)
from credit_jobs.domain.schedule import Schedule, resolve_period, validate_schedule

SHANGHAI = "Asia/Shanghai"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def key(schedule: str, period: Period, now: datetime, tz: str = "UTC") -> str:
    return resolve_period(period=period, time_zone=tz, now=now, schedule=schedule).key


def test_a_pod_started_seven_minutes_after_the_fire_time_gets_the_new_month() -> None:
    assert key("0 0 1 * *", Period.MONTHLY, utc(2026, 12, 1, 0, 7)) == "2026-12"


def test_a_retry_started_late_on_the_last_day_still_gets_the_old_month() -> None:
    assert key("0 0 1 * *", Period.MONTHLY, utc(2026, 11, 30, 23, 59, 59)) == "2026-11"


def test_exactly_at_the_fire_time_the_new_period_begins() -> None:
    assert key("0 0 1 * *", Period.MONTHLY, utc(2026, 12, 1)) == "2026-12"
    assert key("0 0 1 * *", Period.MONTHLY, utc(2026, 12, 1) - timedelta(microseconds=1)) == "2026-11"


def test_the_time_zone_decides_the_month_not_utc() -> None:
    # 1 December 00:00 in Shanghai is 30 November 16:00 UTC.
    assert key("0 0 1 * *", Period.MONTHLY, utc(2026, 11, 30, 16, 5), SHANGHAI) == "2026-12"
    assert key("0 0 1 * *", Period.MONTHLY, utc(2026, 11, 30, 15, 55), SHANGHAI) == "2026-11"


def test_leap_day_daily_key() -> None:
    assert key("0 0 * * *", Period.DAILY, utc(2028, 2, 29, 0, 1)) == "2028-02-29"
    assert key("0 0 29 2 *", Period.DAILY, utc(2029, 3, 1)) == "2028-02-29"


def test_iso_weeks_cross_the_year_boundary() -> None:
    # 1 January 2027 is a Friday: it belongs to ISO week 53 of 2026.
    assert key("0 0 * * 1", Period.WEEKLY, utc(2027, 1, 1, 12)) == "2026-W53"
    assert key("0 0 * * 1", Period.WEEKLY, utc(2027, 1, 4, 0, 0)) == "2027-W01"
    # 29 December 2025 (Monday) starts ISO week 1 of 2026.
    assert key("0 0 * * 1", Period.WEEKLY, utc(2025, 12, 30)) == "2026-W01"


def test_hourly_keys_follow_local_time_across_a_dst_change() -> None:
    # Europe/Berlin falls back on 25 October 2026: 02:00-03:00 CEST happens, then 02:00-03:00 CET again.
    berlin = "Europe/Berlin"
    assert key("0 * * * *", Period.HOURLY, utc(2026, 10, 25, 0, 30), berlin) == "2026-10-25T02+02:00"
    assert key("0 * * * *", Period.HOURLY, utc(2026, 10, 25, 1, 30), berlin) == "2026-10-25T02+01:00"
    assert key("0 * * * *", Period.HOURLY, utc(2026, 10, 25, 2, 30), berlin) == "2026-10-25T03+01:00"


def test_a_daily_job_on_a_dst_spring_forward_day_keeps_its_date() -> None:
    # America/New_York springs forward on 8 March 2026 at 02:00.
    assert key("30 1 * * *", Period.DAILY, utc(2026, 3, 8, 12), "America/New_York") == "2026-03-08"


def test_a_pinned_key_wins_over_the_schedule_and_is_validated() -> None:
    resolved = resolve_period(
        period=Period.MONTHLY,
        time_zone="UTC",
        now=utc(2026, 11, 28),
        schedule="0 0 1 * *",
        pinned_key="2026-10",
    )
    assert resolved.key == "2026-10"
    assert resolved.starts_at == utc(2026, 10, 1)
    assert resolved.scheduled_at is None


@pytest.mark.parametrize(
    ("period", "bad"),
    [
        (Period.MONTHLY, "2026-13"),
        (Period.MONTHLY, "2026-1"),
        (Period.MONTHLY, "november"),
        (Period.WEEKLY, "2026-W54"),
        (Period.WEEKLY, "2026-48"),
        (Period.DAILY, "2026-02-30"),
        (Period.DAILY, "2026-11"),
        (Period.HOURLY, "2026-11-28T24"),
        (Period.HOURLY, "2026-11-28 13"),
    ],
)
def test_malformed_pinned_keys_are_config_errors_that_say_the_expected_form(period: Period, bad: str) -> None:
    with pytest.raises(ConfigError, match=r"period key|names no real"):
        resolve_period(period=period, time_zone="UTC", now=utc(2026, 11, 28), pinned_key=bad)


def test_period_start_is_local_midnight_in_utc() -> None:
    assert period_start("2026-12", Period.MONTHLY, ZoneInfo(SHANGHAI)) == utc(2026, 11, 30, 16)
    assert period_start("2026-W48", Period.WEEKLY, ZoneInfo("UTC")) == utc(2026, 11, 23)


@pytest.mark.parametrize("bad", ["", "0 0 1 *", "61 0 * * *", "0 0 1 * * *", "@fortnightly"])
def test_bad_schedules_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="schedule"):
        validate_schedule(bad)


def test_unknown_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="Mars/Olympus"):
        parse_time_zone("Mars/Olympus")
    with pytest.raises(ConfigError, match="unknown time zone 'Asia'"):
        parse_time_zone("Asia")  # a directory of the tz data (IsADirectoryError), not a zone
    with pytest.raises(ConfigError, match="fortnightly"):
        parse_period("fortnightly")


def test_fire_times_between_lists_missed_fires_oldest_first() -> None:
    fires = list(Schedule.parse("0 0 1 * *").fires_between(utc(2026, 8, 15), utc(2026, 11, 28)))
    assert fires == [utc(2026, 9, 1), utc(2026, 10, 1), utc(2026, 11, 1)]


@settings(deadline=None)  # a shared, loaded machine: no per-example time limit
@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)),
    st.sampled_from(["UTC", SHANGHAI, "America/New_York", "Europe/Berlin", "Australia/Lord_Howe"]),
    st.sampled_from(["0 0 1 * *", "0 0 * * *", "15 * * * *", "0 9 * * 1", "*/5 * * * *"]),
)
def test_the_latest_fire_time_is_never_after_now_and_no_fire_lies_between(
    now: datetime, tz_name: str, schedule: str
) -> None:
    parsed = Schedule.parse(schedule, tz_name)
    fire = parsed.latest_fire(now)
    assert fire is not None
    assert fire <= now
    assert list(parsed.fires_between(fire, now)) == []
