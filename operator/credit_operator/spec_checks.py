"""Spec checks the CRD's schema and CEL rules cannot do, as one-line messages for Ready=False and a Warning Event.

Pure (no I/O); called by `reconcile.py` before anything is created or patched, so an invalid spec leaves the existing
CronJob untouched. Checks: an unknown IANA time zone, a schedule that never fires (`0 0 30 2 *`), a starting
deadline plus run timeout that is not shorter than the shortest gap between two fires (two runs could then
overlap on one period key, or a late start could be keyed to the wrong period), and `params` the container
contract cannot express as CLI flags. The schema's own bounds are repeated cheaply here too, because an object
created before the CRD was installed (or against a test emulator) was never validated.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.period_keys import parse_time_zone, validate_schedule
from credit_operator.creditjob import (
    CONCURRENCY_POLICIES,
    MAX_NAME_LENGTH,
    PERIODS,
    USECASES,
    CreditJob,
    CreditJobSpec,
)

# How far ahead the shortest gap between fires is looked for: a year covers every month length and leap days
# aside, and the fire count cap keeps every-minute schedules cheap (their shortest gap shows up at once).
_GAP_HORIZON = timedelta(days=400)
_GAP_MAX_FIRES = 2000
_PARAM_KEY = re.compile(r"^[a-z][a-zA-Z0-9]*$")

MAX_PARALLELISM = 64
MAX_CATCH_UP_PERIODS = 24


def shortest_gap(schedule: str, time_zone: str, start: datetime) -> timedelta | None:
    """The shortest time between two consecutive fires within a year from `start`; None if it never fires.

    Cached per day: every pass checks the spec, and cron arithmetic is the dearest part of a pass.
    """
    day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return _shortest_gap(schedule, time_zone, day)


@lru_cache(maxsize=4096)
def _shortest_gap(schedule: str, time_zone: str, start: datetime) -> timedelta | None:
    tz = parse_time_zone(time_zone)
    try:
        it = croniter(validate_schedule(schedule), start.astimezone(tz))
        previous: datetime = it.get_next(datetime)
    except CroniterBadDateError:
        return None
    horizon = start + _GAP_HORIZON
    best: timedelta | None = None
    for _ in range(_GAP_MAX_FIRES):
        try:
            fire: datetime = it.get_next(datetime)
        except CroniterBadDateError:
            break  # fires once within croniter's search window (a yearly date); no second fire to compare
        gap = fire - previous
        best = gap if best is None or gap < best else best
        if fire > horizon:
            break
        previous = fire
    return best


def check_spec(job: CreditJob, now: datetime) -> list[str]:
    """Every problem with the CreditJob's spec, each a one-line message naming the field; [] when valid."""
    spec = job.spec
    problems: list[str] = []
    if len(job.name) > MAX_NAME_LENGTH:
        problems.append(f"metadata.name is {len(job.name)} characters; at most {MAX_NAME_LENGTH} fit a CronJob name")
    problems += _enum_problems(spec)
    problems += _bound_problems(spec)
    problems += _param_problems(spec)
    try:
        parse_time_zone(spec.time_zone)
    except ConfigError as exc:
        problems.append(f"spec.timeZone: {exc}")
        return problems  # the schedule checks below need a zone
    try:
        validate_schedule(spec.schedule)
    except ConfigError as exc:
        problems.append(f"spec.schedule: {exc}")
        return problems
    try:
        gap = shortest_gap(spec.schedule, spec.time_zone, now)
    except (CroniterBadCronError, ValueError) as exc:
        problems.append(f"spec.schedule: {spec.schedule!r} cannot be evaluated: {exc}")
        return problems
    if gap is None:
        problems.append(f"spec.schedule: {spec.schedule!r} never fires (no such date)")
        return problems
    window = spec.starting_deadline_seconds + spec.active_deadline_seconds
    if window >= gap.total_seconds():
        problems.append(
            f"spec.startingDeadlineSeconds + spec.activeDeadlineSeconds = {window}s must be shorter than the "
            f"shortest gap between two fires of {spec.schedule!r} ({int(gap.total_seconds())}s), "
            "or a late run could overlap the next period"
        )
    return problems


def _enum_problems(spec: CreditJobSpec) -> list[str]:
    problems = []
    for field_name, value, allowed in (
        ("usecase", spec.usecase, USECASES),
        ("period", spec.period, PERIODS),
        ("concurrencyPolicy", spec.concurrency_policy, CONCURRENCY_POLICIES),
    ):
        if value not in allowed:
            problems.append(f"spec.{field_name}: {value!r} is not one of {', '.join(allowed)}")
    return problems


def _bound_problems(spec: CreditJobSpec) -> list[str]:
    problems = []
    for field_name, value, low, high in (
        ("parallelism", spec.parallelism, 1, MAX_PARALLELISM),
        ("catchUp.maxPeriods", spec.catch_up_max_periods, 0, MAX_CATCH_UP_PERIODS),
        ("startingDeadlineSeconds", spec.starting_deadline_seconds, 10, 31 * 86400),
        ("activeDeadlineSeconds", spec.active_deadline_seconds, 1, 7 * 86400),
        ("backoffLimit", spec.backoff_limit, 0, 20),
        ("historyLimits.successful", spec.successful_history, 0, 100),
        ("historyLimits.failed", spec.failed_history, 0, 100),
    ):
        if not low <= value <= high:
            problems.append(f"spec.{field_name}: {value} is outside {low}..{high}")
    return problems


def _param_problems(spec: CreditJobSpec) -> list[str]:
    problems = []
    for key, value in spec.params.items():
        if not _PARAM_KEY.match(key):
            problems.append(f"spec.params.{key}: keys must be camelCase (they become --kebab-case flags)")
        elif value is None or not isinstance(value, str | int | float | bool):
            problems.append(f"spec.params.{key}: values must be a string, number or boolean")
    return problems
