"""Schedule fire times against brute force, over every zone of the tz database and 2026-2030.

The oracle is the definition Kubernetes' CronJob controller implements (docs/period-keys.md): a UTC minute is a fire
time iff its local wall-clock fields in the zone match the expression. It is evaluated minute by minute with a matcher
built from croniter's expanded fields (independent of the naive-walk algorithm under test). Hypothesis samples
instants biased toward UTC-offset transitions; a deterministic sweep then visits every transition of every zone in
2026-2030 (found by sampling daily offsets and bisecting) for a few schedules.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credit_jobs.domain.period_keys import Period, format_key, period_start
from credit_jobs.domain.schedule import MAX_CLOCK_SHIFT, Schedule

START, END = datetime(2026, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
ZONES = sorted(zoneinfo.available_timezones())
SCHEDULES = {
    "0 * * * *": Period.HOURLY,
    "30 2 * * *": Period.DAILY,
    "30 0 * * *": Period.DAILY,
    "0 0 * * *": Period.DAILY,
    "*/15 * * * *": Period.HOURLY,
    "*/30 * * * *": Period.DAILY,
    "30 0 1 * *": Period.MONTHLY,
    "0 1 * * 0": Period.WEEKLY,
}


def matcher(expression: str) -> Callable[[datetime], bool]:
    """Does a local wall-clock datetime match? (Vixie/robfig day rule: day-of-month OR weekday when both are set.)"""
    minutes, hours, doms, months, dows = croniter(expression).expanded
    star_dom, star_dow = doms == ["*"], dows == ["*"]

    def values(field: list[int | str], full: range) -> frozenset[int]:
        return frozenset(full) if field == ["*"] else frozenset(int(v) for v in field)

    minute_set, hour_set = values(minutes, range(60)), values(hours, range(24))
    dom_set, month_set = values(doms, range(1, 32)), values(months, range(1, 13))
    dow_set = frozenset(d % 7 for d in values(dows, range(7)))

    def match(local: datetime) -> bool:
        if local.minute not in minute_set or local.hour not in hour_set or local.month not in month_set:
            return False
        dom_ok = star_dom or local.day in dom_set
        dow_ok = star_dow or (local.weekday() + 1) % 7 in dow_set
        return (dom_ok or dow_ok) if not (star_dom or star_dow) else (dom_ok and dow_ok)

    return match


def brute_force(expression: str, tz: ZoneInfo, after: datetime, until: datetime) -> list[datetime]:
    """Every UTC minute in (after, until] whose wall clock in `tz` matches."""
    match = matcher(expression)
    moment = after.replace(second=0, microsecond=0) + MINUTE
    fires = []
    while moment <= until:
        if match(moment.astimezone(tz)):
            fires.append(moment)
        moment += MINUTE
    return fires


@functools.cache
def transitions() -> dict[str, list[tuple[datetime, timedelta]]]:
    """Per zone: (first instant of the new offset, the offset change) for every change in 2026-2030."""
    found: dict[str, list[tuple[datetime, timedelta]]] = {}
    for name in ZONES:
        tz = ZoneInfo(name)
        changes = []
        day, offset = START, START.astimezone(tz).utcoffset()
        while day < END:
            following = day + timedelta(days=1)
            next_offset = following.astimezone(tz).utcoffset()
            if next_offset != offset:
                low, high = day, following
                while high - low > MINUTE:
                    middle = low + (high - low) / 2
                    if middle.astimezone(tz).utcoffset() == offset:
                        low = middle
                    else:
                        high = middle
                assert next_offset is not None
                assert offset is not None
                changes.append((high.replace(second=0, microsecond=0), next_offset - offset))
            day, offset = following, next_offset
        if changes:
            found[name] = changes
    return found


def check_window(schedule: Schedule, around: datetime, span: timedelta) -> None:
    """fires_between, latest_fire and next_fire agree with brute force on [around - span, around + span]."""
    low, high = around - span, around + span
    expected = brute_force(schedule.expression, schedule.tz, low, high)
    assert list(schedule.fires_between(low, high)) == expected
    before = [fire for fire in expected if fire <= around]
    after = [fire for fire in expected if fire > around]
    latest, following = schedule.latest_fire(around), schedule.next_fire(around)
    if before:
        assert latest == before[-1]
    else:
        assert latest is not None
        assert latest <= low  # the true latest fire lies before the window
    if after:
        assert following == after[0]
    else:
        assert following is not None
        assert following > high
    # every fire gets the key of the period containing it, and keys round-trip
    for fire in expected:
        key = schedule.period_key_of(fire)
        start = period_start(key, schedule.period, schedule.tz)
        assert start <= fire
        assert format_key(start.astimezone(schedule.tz), schedule.period) == key
    if schedule.period is Period.HOURLY:  # two different hours (wall-clock hour, offset) never share a key
        hours = {
            (f.astimezone(schedule.tz).replace(minute=0, tzinfo=None), f.astimezone(schedule.tz).utcoffset())
            for f in expected
        }
        assert len({schedule.period_key_of(fire) for fire in expected}) == len(hours)


@st.composite
def instants(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone and an instant in 2026-2030; two draws in three land within a few hours of an offset change."""
    changing = transitions()
    if draw(st.integers(0, 2)) and changing:
        zone = draw(st.sampled_from(sorted(changing)))
        at, _ = draw(st.sampled_from(changing[zone]))
        return zone, at + timedelta(minutes=draw(st.integers(-240, 240)))
    zone = draw(st.sampled_from(ZONES))
    seconds = draw(st.integers(0, int((END - START).total_seconds()) - 1))
    return zone, START + timedelta(seconds=seconds)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instants(), st.sampled_from(sorted(SCHEDULES)))
def test_fire_times_match_brute_force_around_sampled_instants(sample: tuple[str, datetime], expression: str) -> None:
    zone, around = sample
    check_window(Schedule.parse(expression, zone, SCHEDULES[expression]), around, timedelta(hours=30))


def test_every_offset_change_in_2026_to_2030_is_within_the_clock_shift_bound() -> None:
    changes = [change for per_zone in transitions().values() for _, change in per_zone]
    assert len(changes) > 500  # the sweep below really visits the DST world
    assert max(abs(change) for change in changes) <= MAX_CLOCK_SHIFT


def test_sweep_every_offset_change_of_every_zone() -> None:
    # Zones with the same offset at the start and the same changes behave identically in these years (links such as
    # US/Eastern, and zones that share rules): one of each is swept.
    distinct: dict[tuple[object, ...], str] = {}
    for zone, changes in transitions().items():
        distinct.setdefault((START.astimezone(ZoneInfo(zone)).utcoffset(), tuple(changes)), zone)
    assert len(distinct) >= 25  # 201 zones change offset in these years, in 30 distinct ways
    schedules = [("0 * * * *", Period.HOURLY), ("30 1 * * *", Period.DAILY), ("*/30 * * * *", Period.HOURLY)]
    for zone in distinct.values():
        changes = transitions()[zone]
        for expression, period in schedules:
            schedule = Schedule.parse(expression, zone, period)
            for at, _ in changes:
                check_window(schedule, at, timedelta(hours=3))
