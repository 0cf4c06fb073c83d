"""Period keys: which billing period a run belongs to, and the one canonical spelling of each key. Pure (no I/O).

One period, one spelling: a key must equal its own re-formatting (`format_key` writes keys, `period_start` reads
them; docs/period-keys.md). `domain.schedule` builds on this module's key grammar, never the reverse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from credit_jobs.domain.contract import Period as Period  # the granularities are part of the contract
from credit_jobs.domain.errors import ConfigError

# Periods a key may name: from the Unix epoch to well before year 9999, so a period's start plus the longest
# validity a grant may have (a century, domain.limits.MAX_EXPIRY_DAYS) stays inside Python's and PostgreSQL's
# calendars — `9999-12` would overflow the first date arithmetic done with it.
MIN_KEY_YEAR = 1970
MAX_KEY_YEAR = 9899


# ASCII digits spelled out ([0-9], never \d) and re.ASCII besides: full-width `2026-11` must not parse as 2026-11.
_D4, _D2 = "([0-9]{4})", "([0-9]{2})"
_KEY_PATTERNS: dict[Period, re.Pattern[str]] = {
    Period.MONTHLY: re.compile(rf"\A{_D4}-{_D2}\Z", re.ASCII),
    Period.WEEKLY: re.compile(rf"\A{_D4}-W{_D2}\Z", re.ASCII),
    Period.DAILY: re.compile(rf"\A{_D4}-{_D2}-{_D2}\Z", re.ASCII),
    Period.HOURLY: re.compile(rf"\A{_D4}-{_D2}-{_D2}T{_D2}([+-]){_D2}:{_D2}\Z", re.ASCII),
}
_LEGACY_HOURLY = re.compile(rf"\A{_D4}-{_D2}-{_D2}T{_D2}\Z", re.ASCII)

_EXAMPLES = {
    Period.MONTHLY: "2026-11",
    Period.WEEKLY: "2026-W48",
    Period.DAILY: "2026-11-28",
    Period.HOURLY: "2026-11-28T13+01:00",
}

# The same grammar as PostgreSQL regular expressions, for the CHECK constraints of migration 0005 (mirrored in
# adapters/tables.py). The database accepts the legacy hourly form too: rows written before 0005 must stay
# updatable (a consume or expiry updates their grant), while new code never writes it (see format_key).
_SQL_MONTH = "(0[1-9]|1[0-2])"
_SQL_DAY = "(0[1-9]|[12][0-9]|3[01])"
_SQL_HOUR = "([01][0-9]|2[0-3])"
SQL_KEY_PATTERN = (
    "^[0-9]{4}-("
    f"{_SQL_MONTH}"
    "|W(0[1-9]|[1-4][0-9]|5[0-3])"
    f"|{_SQL_MONTH}-{_SQL_DAY}(T{_SQL_HOUR}([+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?"
    ")$"
)


@dataclass(frozen=True)
class ResolvedPeriod:
    """A period key with the instant its period starts (used to anchor grant expiry deterministically).

    The key of a run is the period containing the latest fire time of the schedule that is ≤ now, in the schedule's
    time zone (`domain.schedule.resolve_period`) — unless a key is pinned (`CREDITJOB_PERIOD_KEY` on manual /
    catch-up / backfill Jobs). So a pod that starts at 00:07 on 1 December for the 00:00 schedule grants December,
    and a retry that starts late on 30 November for the November fire time still grants November (its latest fire
    time is still 1 November).
    """

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
    # OSError: a tzdata directory such as "Asia" (IsADirectoryError) or an unreadable file is no zone either.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigError(f"unknown time zone {name!r}: use an IANA name such as UTC or Asia/Shanghai") from None


def _format_offset(offset: timedelta) -> str:
    minutes = round(offset.total_seconds() / 60)
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def format_key(moment: datetime, period: Period) -> str:
    """The key of the period containing `moment` (aware; formatted in its own time zone).

    Formats: `2026-11` (monthly), `2026-W48` (ISO week), `2026-11-28` (daily), `2026-11-28T13+01:00` (hourly: the
    local hour and its UTC offset). Hourly keys carry the UTC offset of `moment`, so the repeated hour of a fall-back
    night gets its own key: its two 01:00 hours are two keys.
    """
    if moment.tzinfo is None:
        raise ValueError("moment must be timezone-aware")
    if period is Period.MONTHLY:
        return f"{moment.year:04d}-{moment.month:02d}"
    if period is Period.WEEKLY:
        iso = moment.isocalendar()
        return f"{iso.year:04d}-W{iso.week:02d}"
    day = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
    if period is Period.DAILY:
        return day
    offset = moment.utcoffset()
    assert offset is not None  # aware, checked above
    return f"{day}T{moment.hour:02d}{_format_offset(offset)}"


def _malformed(key: str, period: Period, what: str) -> ConfigError:
    return ConfigError(f"{what} {period.value} period key {key!r}: expected the form {_EXAMPLES[period]}")


def _hour_start(key: str, parts: list[int], sign: str, tz: ZoneInfo) -> datetime:
    """The first instant whose local hour and UTC offset in `tz` are the key's (a half-hour DST change can start
    the period mid-hour); ConfigError when `tz` never shows that hour with that offset."""
    year, month, day, hour, off_h, off_m = parts
    offset = (-1 if sign == "-" else 1) * timedelta(hours=off_h, minutes=off_m)
    wall = datetime(year, month, day, hour)
    for minute in range(60):
        local = wall + timedelta(minutes=minute)
        instant = (local - offset).replace(tzinfo=UTC)
        seen = instant.astimezone(tz)
        if seen.replace(tzinfo=None) == local and seen.utcoffset() == offset:
            return instant
    raise ConfigError(f"hourly period key {key!r} names no hour of time zone {tz.key}: its clocks never show it")


def _legacy_hint(key: str, tz: ZoneInfo) -> str:
    """The new-form keys a legacy hourly key could mean in `tz` (two on a fall-back night, none in a gap)."""
    match = _LEGACY_HOURLY.match(key)
    assert match is not None
    year, month, day, hour = (int(p) for p in match.groups())
    candidates: list[str] = []
    try:
        wall = datetime(year, month, day, hour)
    except ValueError:
        return "2026-11-28T13+01:00"
    for fold in (0, 1):
        instant = wall.replace(tzinfo=tz, fold=fold).astimezone(UTC).astimezone(tz)
        if instant.replace(tzinfo=None) == wall:
            candidates.append(format_key(instant, Period.HOURLY))
    return " or ".join(dict.fromkeys(candidates)) or "2026-11-28T13+01:00"


def period_start(key: str, period: Period, tz: ZoneInfo) -> datetime:
    """Where the period named by `key` starts, as an aware UTC datetime; ConfigError unless `key` is canonical.

    Canonical: ASCII digits, the exact form of `format_key`, a real period of `tz` between MIN_KEY_YEAR and
    MAX_KEY_YEAR — and `format_key(period_start(key))` gives `key` back. Keys are parsed as ASCII only and must equal
    their own re-formatting (no Unicode digits, padding variants or spaces: one period, one spelling). Legacy hourly
    keys without an offset (`2026-11-28T13`, written before migration 0005) are accepted by the database for old rows
    but refused as input, with the new form in the message.
    """
    match = _KEY_PATTERNS[period].match(key)
    if match is None:
        if period is Period.HOURLY and _LEGACY_HOURLY.match(key):
            raise ConfigError(
                f"hourly period key {key!r} has no UTC offset (the form used before hourly keys became "
                f"unambiguous): use {_legacy_hint(key, tz)}"
            )
        raise _malformed(key, period, "malformed")
    groups = match.groups()
    sign = groups[4] if period is Period.HOURLY else ""
    parts = [int(p, 10) for p in groups if p not in ("+", "-")]
    if not MIN_KEY_YEAR <= parts[0] <= MAX_KEY_YEAR:
        raise ConfigError(
            f"period key {key!r} is outside the supported years {MIN_KEY_YEAR}..{MAX_KEY_YEAR}: pin a real period"
        )
    try:
        if period is Period.MONTHLY:
            start = datetime(parts[0], parts[1], 1, tzinfo=tz).astimezone(UTC)
        elif period is Period.WEEKLY:
            monday = date.fromisocalendar(parts[0], parts[1], 1)
            start = datetime.combine(monday, datetime.min.time(), tz).astimezone(UTC)
        elif period is Period.DAILY:
            start = datetime(parts[0], parts[1], parts[2], tzinfo=tz).astimezone(UTC)
        else:
            start = _hour_start(key, parts, sign, tz)
    except ValueError as exc:
        raise ConfigError(f"period key {key!r} names no real {period.value} period: {exc}") from None
    # One period, one spelling: `2026-W1`, `+05:30` written `+0530`, a `-00:00` offset… all fail here.
    if format_key(start.astimezone(tz), period) != key:
        raise _malformed(key, period, "non-canonical")
    return start
