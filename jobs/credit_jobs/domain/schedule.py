"""`Schedule`: a cron expression with its time zone and period, parsed once, and its exact fire times. Pure (no I/O).

The one place fire times are computed, with the Kubernetes CronJob controller's semantics: an instant is a fire time
iff its wall-clock fields in the schedule's zone match the expression (`Schedule`; docs/period-keys.md).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from zoneinfo import ZoneInfo

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.period_keys import (
    Period,
    ResolvedPeriod,
    format_key,
    parse_period,
    parse_time_zone,
    period_start,
)

# The largest UTC-offset change of any zone (one transition, or the spread of offsets across a few hours). The tz
# database's largest in 2026-2030 is 2 h (Antarctica/Troll, +00 ↔ +02); the property test sweeps every transition
# of every zone in those years and checks this bound.
MAX_CLOCK_SHIFT = timedelta(hours=3)

_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
# A fixed base for the "does it ever fire" check: croniter gives up after searching a few decades, which covers
# 29 February; 30 February or 31 April are never found.
_NEVER_FIRES_BASE = datetime(2000, 1, 1)
_NAIVE_ERRORS = (CroniterBadDateError, OverflowError, ValueError)


def validate_schedule(schedule: str) -> str:
    """A five-field cron expression (or an @ macro) that fires at least once, else a one-line ConfigError."""
    expr = schedule.strip()
    if not expr:
        raise ConfigError("empty schedule: use a five-field cron expression such as '0 0 1 * *'")
    if expr.startswith("@"):
        if expr.lower() not in _MACROS:
            raise ConfigError(f"schedule {schedule!r}: unknown macro; use one of {', '.join(_MACROS)}")
    elif len(expr.split()) != 5:
        raise ConfigError(f"schedule {schedule!r} must have five fields (minute hour day month weekday)")
    try:
        croniter(expr, _NEVER_FIRES_BASE).get_next(datetime)
    except CroniterBadDateError:
        raise ConfigError(
            f"schedule {schedule!r} never fires (no such date): check the day of month against the month"
        ) from None
    except (CroniterBadCronError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"schedule {schedule!r} is not a valid cron expression: {exc}") from None
    return expr


@dataclass(frozen=True)
class Schedule:
    """Expression + time zone + period, validated; fire times are aware datetimes in UTC.

    Semantics (docs/period-keys.md): those of the Kubernetes CronJob controller with `spec.timeZone` (robfig/cron v3
    `SpecSchedule.Next`, which walks absolute time and tests the *local wall-clock* fields): an instant is a fire time
    iff its wall-clock minute, hour, day, month and weekday in the zone match the expression. So a wall-clock time the
    fall-back repeats fires twice (once per UTC offset) and one the spring-forward skips never fires.

    How, exactly: the expression is iterated over *naive* wall-clock datetimes (croniter is exact there: no DST), and
    each naive match is mapped to the instants that show it (none in a gap, two when repeated). Instants are in the
    same order as their wall-clock times except across a clock change, and a change moves the clock by at most
    MAX_CLOCK_SHIFT, so walking the naive matches MAX_CLOCK_SHIFT beyond the answer proves nothing closer was missed.
    """

    expression: str
    time_zone: str
    period: Period
    tz: ZoneInfo = field(compare=False, repr=False)

    @classmethod
    def parse(cls, expression: str, time_zone: str = "UTC", period: Period | str = Period.MONTHLY) -> Schedule:
        """Validate all three (ConfigError naming the bad one) and build the value."""
        tz = parse_time_zone(time_zone)
        granularity = period if isinstance(period, Period) else parse_period(period)
        return cls(validate_schedule(expression), time_zone or "UTC", granularity, tz)

    # --- fire times -------------------------------------------------------------------------------------------

    def latest_fire(self, now: datetime) -> datetime | None:
        """The latest fire time ≤ `now` (None only for a `now` before any fire, e.g. near year 1)."""
        return next(self.fires_at_or_before(now), None)

    def next_fire(self, after: datetime) -> datetime | None:
        """The first fire time > `after` (None only near year 9999)."""
        return next(self.fires_after(after), None)

    def fires_between(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """Fire times t with after < t ≤ until, oldest first."""
        end = _utc(until)
        return takewhile(lambda fire: fire <= end, self.fires_after(after))

    def fires_after(self, after: datetime) -> Iterator[datetime]:
        """Every fire time > `after`, oldest first (an endless iterator but for the calendar's end)."""
        start = _utc(after)
        pending: list[tuple[datetime, datetime]] = []  # (instant, its naive wall-clock time), a min-heap
        for wall in self._walls(self._wall(start) - MAX_CLOCK_SHIFT, forward=True):
            for instant in self._instants(wall):
                if instant > start:
                    heapq.heappush(pending, (instant, wall))
            # Whatever a later wall-clock match maps to lies after an instant whose wall clock is more than one
            # clock shift behind the current match.
            while pending and pending[0][1] < wall - MAX_CLOCK_SHIFT:
                yield heapq.heappop(pending)[0]
        while pending:
            yield heapq.heappop(pending)[0]

    def fires_at_or_before(self, until: datetime) -> Iterator[datetime]:
        """Every fire time ≤ `until`, newest first (the mirror image of fires_after)."""
        end = _utc(until)
        pending: list[tuple[float, datetime, datetime]] = []  # (-timestamp, wall, instant): a max-heap by instant
        for wall in self._walls(self._wall(end) + MAX_CLOCK_SHIFT + timedelta(minutes=1), forward=False):
            for instant in self._instants(wall):
                if instant <= end:
                    heapq.heappush(pending, (-instant.timestamp(), wall, instant))
            while pending and pending[0][1] > wall + MAX_CLOCK_SHIFT:
                yield heapq.heappop(pending)[2]
        while pending:
            yield heapq.heappop(pending)[2]

    def interval(self, now: datetime) -> float:
        """Seconds between the wall-clock match in force at `now` and the next one: the schedule's spacing as its
        expression reads (a day for `0 2 * * *`, also on a DST night), for "no success within 1.5 intervals" alerts.
        """
        base = self._wall(_utc(now)) + timedelta(minutes=1)
        try:
            it = croniter(self.expression, base)
            previous: datetime = it.get_prev(datetime)
            following: datetime = croniter(self.expression, previous).get_next(datetime)
        except _NAIVE_ERRORS:
            return 0.0
        return (following - previous).total_seconds()

    # --- period keys ------------------------------------------------------------------------------------------

    def period_key_of(self, fire: datetime) -> str:
        """The key of the period containing `fire`, in the schedule's zone (hourly keys carry the offset)."""
        return format_key(_utc(fire).astimezone(self.tz), self.period)

    def local(self, moment: datetime) -> datetime:
        """`moment` as an aware datetime in the schedule's zone (for display)."""
        return _utc(moment).astimezone(self.tz)

    def repeats(self, fire: datetime) -> bool:
        """Whether the wall-clock time of `fire` happens twice (a fall-back), so the schedule fires at both."""
        return len(self._instants(self._wall(_utc(fire)))) > 1

    def skipped_walls(self, after: datetime, until: datetime) -> list[datetime]:
        """Naive wall-clock matches in (local(after), local(until)] that no instant shows (skipped by a DST change),
        for `credit-jobs schedule`'s notes."""
        start, end = self._wall(_utc(after)), self._wall(_utc(until))
        skipped = []
        for wall in self._walls(start, forward=True):
            if wall > end:
                break
            if not self._instants(wall):
                skipped.append(wall)
        return skipped

    # --- internals --------------------------------------------------------------------------------------------

    def _wall(self, instant: datetime) -> datetime:
        return instant.astimezone(self.tz).replace(tzinfo=None)

    def _walls(self, base: datetime, *, forward: bool) -> Iterator[datetime]:
        """Naive wall-clock matches strictly after (or before) `base`."""
        it = croniter(self.expression, base)
        while True:
            try:
                wall: datetime = it.get_next(datetime) if forward else it.get_prev(datetime)
            except _NAIVE_ERRORS:
                return
            yield wall

    def _instants(self, wall: datetime) -> list[datetime]:
        """The instants (UTC) whose local wall clock shows `wall`: none in a gap, two when the hour repeats."""
        found: list[datetime] = []
        for fold in (0, 1):
            try:
                instant = wall.replace(tzinfo=self.tz, fold=fold).astimezone(UTC)
            except OverflowError:
                continue
            if instant.astimezone(self.tz).replace(tzinfo=None) == wall and instant not in found:
                found.append(instant)
        found.sort()
        return found


def _utc(moment: datetime) -> datetime:
    """Aware datetimes compare by wall clock when they share a tzinfo (fold ignored): normalize to UTC first."""
    if moment.tzinfo is None:
        raise ValueError("datetimes given to a Schedule must be timezone-aware")
    return moment.astimezone(UTC)


def resolve_period(
    *,
    period: Period,
    time_zone: str,
    now: datetime,
    schedule: Schedule | str | None = None,
    pinned_key: str | None = None,
) -> ResolvedPeriod:
    """The period a run belongs to: the pinned key when given (validated), else the schedule's latest fire time.

    With neither a pinned key nor a schedule (an ad-hoc CLI run), the period containing `now` is used. `now` is the
    caller's clock (the pod's, for a run: docs/period-keys.md says why that is safe).
    """
    tz = parse_time_zone(time_zone)
    parsed = Schedule.parse(schedule, time_zone, period) if isinstance(schedule, str) and schedule else None
    if isinstance(schedule, Schedule):
        parsed = schedule
    if pinned_key is not None and pinned_key != "":
        return ResolvedPeriod(pinned_key, period, period_start(pinned_key, period, tz), None)
    if parsed is None:
        key = format_key(now.astimezone(tz), period)
        return ResolvedPeriod(key, period, period_start(key, period, tz), None)
    fire = parsed.latest_fire(now)
    if fire is None:
        raise ConfigError(f"schedule {parsed.expression!r} has no fire time before {now.isoformat()}")
    key = parsed.period_key_of(fire)
    return ResolvedPeriod(key, period, period_start(key, period, tz), fire)
