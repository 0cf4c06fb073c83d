"""The Schedule and canonical period keys: the DST cases seen in acceptance testing, and every non-canonical key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.period_keys import Period, format_key, period_start
from credit_jobs.domain.schedule import Schedule, resolve_period


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def digits(text: str, zero: int) -> str:
    """`text` with its ASCII digits replaced by another script's (whose zero is code point `zero`)."""
    return "".join(chr(zero + int(c)) if c.isdigit() else c for c in text)


# --- seen: croniter's get_prev around fall-back ------------------------------------------------------------------


def test_berlin_daily_0230_resolved_after_the_first_0230_gets_that_day() -> None:
    # 25 October 2026: 02:30 CEST (00:30Z) fires, then 02:30 CET (01:30Z). At 01:10Z the latest fire is 00:30Z.
    resolved = resolve_period(
        period=Period.DAILY, time_zone="Europe/Berlin", now=utc(2026, 10, 25, 1, 10), schedule="30 2 * * *"
    )
    assert resolved.key == "2026-10-25"
    assert resolved.scheduled_at == utc(2026, 10, 25, 0, 30)


def test_havana_monthly_run_40_minutes_late_on_the_first_gets_the_new_month() -> None:
    # Havana falls back at 01:00 CDT on 1 November 2026: 00:30 happens at 04:30Z and again at 05:30Z.
    resolved = resolve_period(
        period=Period.MONTHLY,
        time_zone="America/Havana",
        now=utc(2026, 11, 1, 4, 30) + timedelta(minutes=40),
        schedule="30 0 1 * *",
    )
    assert resolved.key == "2026-11"
    assert resolved.scheduled_at == utc(2026, 11, 1, 4, 30)


def test_new_york_hourly_fires_twice_at_1am_on_fall_back_night_with_two_keys() -> None:
    schedule = Schedule.parse("0 * * * *", "America/New_York", "hourly")
    fires = list(schedule.fires_between(utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 6, 30)))
    assert fires == [utc(2026, 11, 1, 5), utc(2026, 11, 1, 6)]  # 01:00 EDT, 01:00 EST
    keys = [schedule.period_key_of(fire) for fire in fires]
    assert keys == ["2026-11-01T01-04:00", "2026-11-01T01-05:00"]
    for now, expected in ((utc(2026, 11, 1, 5, 59), keys[0]), (utc(2026, 11, 1, 6, 1), keys[1])):
        resolved = resolve_period(period=Period.HOURLY, time_zone="America/New_York", now=now, schedule="0 * * * *")
        assert resolved.key == expected


def test_a_wall_clock_time_skipped_by_spring_forward_never_fires() -> None:
    # New York, 8 March 2026: 02:00 EST becomes 03:00 EDT; 02:30 does not exist that day (Kubernetes skips it).
    schedule = Schedule.parse("30 2 * * *", "America/New_York", "daily")
    fires = list(schedule.fires_between(utc(2026, 3, 7, 6), utc(2026, 3, 9, 12)))
    assert fires == [utc(2026, 3, 7, 7, 30), utc(2026, 3, 9, 6, 30)]
    assert schedule.skipped_walls(utc(2026, 3, 7, 6), utc(2026, 3, 9, 12)) == [datetime(2026, 3, 8, 2, 30)]


def test_hourly_keys_round_trip_and_name_the_first_instant_of_their_hour() -> None:
    ny = ZoneInfo("America/New_York")
    for key, start in (
        ("2026-11-01T01-04:00", utc(2026, 11, 1, 5)),
        ("2026-11-01T01-05:00", utc(2026, 11, 1, 6)),
        ("2026-11-28T13+00:00", utc(2026, 11, 28, 13)),
    ):
        zone = ny if key.endswith(":00") and "+00" not in key else ZoneInfo("UTC")
        assert period_start(key, Period.HOURLY, zone) == start
        assert format_key(start.astimezone(zone), Period.HOURLY) == key
    # Lord Howe falls back half an hour: 01:30-01:59 happens twice; the second 01 hour (+10:30) starts at 01:30.
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    assert period_start("2026-04-05T01+10:30", Period.HOURLY, lord_howe) == utc(2026, 4, 4, 15)
    with pytest.raises(ConfigError, match="names no hour"):
        period_start("2026-03-08T02-05:00", Period.HOURLY, ny)  # skipped by spring-forward


# --- validation at parse time -------------------------------------------------------------------------------------


@pytest.mark.parametrize("never", ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 4,6,9,11 *"])
def test_a_schedule_that_never_fires_is_a_config_error_when_parsed(never: str) -> None:
    with pytest.raises(ConfigError, match="never fires"):
        Schedule.parse(never)
    with pytest.raises(ConfigError, match="never fires"):
        resolve_period(period=Period.MONTHLY, time_zone="UTC", now=utc(2026, 11, 28), schedule=never)


def test_a_leap_day_schedule_does_fire() -> None:
    assert Schedule.parse("0 0 29 2 *").next_fire(utc(2026, 11, 28)) == utc(2028, 2, 29)


def test_interval_is_the_wall_clock_spacing_even_on_a_dst_night() -> None:
    daily = Schedule.parse("30 1 * * *", "America/New_York", "daily")
    assert daily.interval(utc(2026, 11, 1, 5, 45)) == 86400  # between the two 01:30 fires of fall-back night
    assert Schedule.parse("0 0 1 * *").interval(utc(2026, 11, 28)) == 30 * 86400


# --- only canonical keys --------------------------------------------------------------------------------------------

NON_CANONICAL = [
    (Period.MONTHLY, digits("2026-11", 0xFF10)),  # full-width
    (Period.MONTHLY, digits("2026-11", 0x0660)),  # Arabic-Indic
    (Period.MONTHLY, digits("2026-11", 0x06F0)),  # Persian (extended Arabic-Indic)
    (Period.MONTHLY, digits("2026-11", 0x1D7CE)),  # mathematical bold
    (Period.MONTHLY, digits("2026", 0xFF10) + "-11"),  # mixed
    (Period.DAILY, digits("2026-11-28", 0x0966)),  # Devanagari
    (Period.MONTHLY, "2026-1"),
    (Period.MONTHLY, "2026-11 "),
    (Period.MONTHLY, " 2026-11"),
    (Period.MONTHLY, "2026-11\n"),
    (Period.MONTHLY, "+2026-11"),
    (Period.MONTHLY, "9999-12"),  # outside the supported years: would overflow the expiry arithmetic
    (Period.MONTHLY, "0000-01"),
    (Period.MONTHLY, "1969-12"),
    (Period.WEEKLY, "2026-w48"),  # lower-case w
    (Period.WEEKLY, "2026-W54"),
    (Period.WEEKLY, "2027-W53"),  # 2027 has 52 ISO weeks
    (Period.WEEKLY, "2026-W00"),
    (Period.DAILY, "2026-11-1"),
    (Period.DAILY, "2026-02-29"),
    (Period.HOURLY, "2026-11-28T13"),  # legacy hourly: no offset
    (Period.HOURLY, "2026-11-28T13+0000"),
    (Period.HOURLY, "2026-11-28T13-00:00"),  # UTC is spelled +00:00
    (Period.HOURLY, "2026-11-28t13+00:00"),
    (Period.HOURLY, "2026-11-28T13+01:00"),  # UTC never shows +01:00
    (Period.HOURLY, "2026-11-28T24+00:00"),
]


@pytest.mark.parametrize(("period", "key"), NON_CANONICAL)
def test_non_canonical_pinned_keys_are_config_errors(period: Period, key: str) -> None:
    with pytest.raises(ConfigError, match="period key"):
        resolve_period(period=period, time_zone="UTC", now=utc(2026, 11, 28), pinned_key=key)


def test_a_legacy_hourly_key_is_refused_with_the_new_form_in_the_message() -> None:
    with pytest.raises(ConfigError, match=r"use 2026-11-01T01-04:00 or 2026-11-01T01-05:00"):
        resolve_period(
            period=Period.HOURLY, time_zone="America/New_York", now=utc(2026, 11, 28), pinned_key="2026-11-01T01"
        )


@pytest.mark.parametrize(
    ("period", "key"),
    [
        (Period.MONTHLY, "2026-11"),
        (Period.WEEKLY, "2026-W53"),
        (Period.DAILY, "2028-02-29"),
        (Period.HOURLY, "2026-11-28T13+00:00"),
        (Period.MONTHLY, "9899-12"),
        (Period.MONTHLY, "1970-01"),
    ],
)
def test_canonical_keys_round_trip(period: Period, key: str) -> None:
    start = period_start(key, period, ZoneInfo("UTC"))
    assert format_key(start, period) == key
