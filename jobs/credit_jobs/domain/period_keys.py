"""Period keys: which billing period a run belongs to, derived from the *scheduled* time, never the wall clock.

Pure functions (no I/O), shared by the jobs' run lifecycle and the operator's catch-up planner (design.md ⚓).
The key of a run is the period containing the latest fire time of the schedule, in the schedule's time zone, that is
≤ now — unless a key is pinned (`CREDITJOB_PERIOD_KEY` on manual / catch-up / backfill Jobs). So a pod that starts
at 00:07 on 1 December for the 00:00 schedule grants December, and a retry that starts late on 30 November for the
November fire time still grants November (its latest fire time is still 1 November).

Formats: `2026-11` (monthly), `2026-W48` (ISO week), `2026-11-28` (daily), `2026-11-28T13` (hourly).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, croniter

from credit_jobs.domain.errors import ConfigError


class Period(StrEnum):
    """Granularity of a period key."""

    MONTHLY = "monthly"
    WEEKLY = "weekly"
    DAILY = "daily"
    HOURLY = "hourly"


_KEY_PATTERNS: dict[Period, re.Pattern[str]] = {
    Period.MONTHLY: re.compile(r"^(\d{4})-(\d{2})$"),
    Period.WEEKLY: re.compile(r"^(\d{4})-W(\d{2})$"),
    Period.DAILY: re.compile(r"^(\d{4})-(\d{2})-(\d{2})$"),
    Period.HOURLY: re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2})$"),
}

_EXAMPLES = {
    Period.MONTHLY: "2026-11",
    Period.WEEKLY: "2026-W48",
    Period.DAILY: "2026-11-28",
    Period.HOURLY: "2026-11-28T13",
}


@dataclass(frozen=True)
class ResolvedPeriod:
    """A period key with the instant its period starts (used to anchor grant expiry deterministically)."""

    key: str
    period: Period
    starts_at: datetime  # aware, in UTC
    scheduled_at: datetime | None  # the fire time it was derived from; None when pinned


def parse_period(value: str) -> Period:
    """`monthly` → Period.MONTHLY; anything else is a ConfigError naming the allowed values."""
    try:
        return Period(value.strip().lower())
    except ValueError:
        allowed = ", ".join(p.value for p in Period)
        raise ConfigError(f"unknown period {value!r}: use one of {allowed}") from None


def parse_time_zone(name: str) -> ZoneInfo:
    """An IANA zone, or a ConfigError saying which name is unknown."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {name!r}: use an IANA name such as UTC or Asia/Shanghai") from None


def validate_schedule(schedule: str) -> str:
    """A five-field cron expression or an @ macro croniter understands, else a ConfigError."""
    expr = schedule.strip()
    if not expr:
        raise ConfigError("empty schedule: use a five-field cron expression such as '0 0 1 * *'")
    if not expr.startswith("@") and len(expr.split()) != 5:
        raise ConfigError(f"schedule {schedule!r} must have five fields (minute hour day month weekday)")
    try:
        croniter(expr)
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise ConfigError(f"schedule {schedule!r} is not a valid cron expression: {exc}") from None
    return expr


def format_key(moment: datetime, period: Period) -> str:
    """The key of the period containing `moment` (aware; formatted in its own time zone)."""
    if period is Period.MONTHLY:
        return f"{moment.year:04d}-{moment.month:02d}"
    if period is Period.WEEKLY:
        iso = moment.isocalendar()
        return f"{iso.year:04d}-W{iso.week:02d}"
    if period is Period.DAILY:
        return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
    return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}"


def period_start(key: str, period: Period, tz: ZoneInfo) -> datetime:
    """Where the period named by `key` starts, as an aware UTC datetime; ConfigError when `key` is malformed."""
    match = _KEY_PATTERNS[period].match(key)
    if match is None:
        raise ConfigError(f"malformed {period.value} period key {key!r}: expected the form {_EXAMPLES[period]}")
    parts = [int(p) for p in match.groups()]
    try:
        if period is Period.MONTHLY:
            local = datetime(parts[0], parts[1], 1, tzinfo=tz)
        elif period is Period.WEEKLY:
            local = datetime.combine(date.fromisocalendar(parts[0], parts[1], 1), datetime.min.time(), tz)
        elif period is Period.DAILY:
            local = datetime(parts[0], parts[1], parts[2], tzinfo=tz)
        else:
            local = datetime(parts[0], parts[1], parts[2], parts[3], tzinfo=tz)
    except ValueError as exc:
        raise ConfigError(f"period key {key!r} names no real {period.value} period: {exc}") from None
    return local.astimezone(UTC)


def latest_fire_time(schedule: str, tz: ZoneInfo, now: datetime) -> datetime:
    """The latest fire time of `schedule` in `tz` that is ≤ `now` (aware, in `tz`)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    # Cron fires on whole minutes: every fire time ≤ now is < the next whole minute after now, and get_prev
    # returns the latest fire time strictly before its base.
    base = now.astimezone(tz).replace(second=0, microsecond=0) + timedelta(minutes=1)
    fire: datetime = croniter(validate_schedule(schedule), base).get_prev(datetime)
    return fire.astimezone(tz)


def fire_times_between(schedule: str, tz: ZoneInfo, after: datetime, until: datetime) -> Iterator[datetime]:
    """Fire times t with after < t ≤ until, oldest first (aware, in `tz`). Used by the catch-up planner."""
    it = croniter(validate_schedule(schedule), after.astimezone(tz))
    while True:
        fire: datetime = it.get_next(datetime)
        if fire > until:
            return
        yield fire.astimezone(tz)


def resolve_period(
    *,
    period: Period,
    time_zone: str,
    now: datetime,
    schedule: str | None = None,
    pinned_key: str | None = None,
) -> ResolvedPeriod:
    """The period a run belongs to: the pinned key when given (validated), else the schedule's latest fire time.

    With neither a pinned key nor a schedule (an ad-hoc CLI run), the period containing `now` is used.
    """
    tz = parse_time_zone(time_zone)
    if pinned_key:
        key = pinned_key.strip()
        return ResolvedPeriod(key, period, period_start(key, period, tz), None)
    fire = latest_fire_time(schedule, tz, now) if schedule else now.astimezone(tz)
    key = format_key(fire, period)
    return ResolvedPeriod(key, period, period_start(key, period, tz), fire if schedule else None)
