"""Spec checks the CRD's schema and CEL rules cannot do, as one-line messages for Ready=False and a Warning Event.

Pure (no I/O); a pass runs them before anything is created or patched, so an invalid spec leaves the existing CronJob
untouched. Checks: an unknown IANA time zone, a schedule that never fires (`0 0 30 2 *`), a starting deadline plus run
timeout that is not shorter than the shortest gap between two fires (two runs could then overlap on one period key, or a
late start could be keyed to the wrong period), and `params` the container contract cannot express as CLI flags. The
schema's own bounds are repeated cheaply here too, because an object created before the CRD was installed (or against a
test emulator) was never validated.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.period_keys import parse_time_zone
from credit_jobs.domain.schedule import Schedule, validate_schedule
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


def shortest_gap(schedule: Schedule, start: datetime) -> timedelta | None:
    """The shortest time between the last fire of one period and the first fire of the next, within a year from
    `start`; None if no two periods are seen. (Two fires of one period — the repeated 01:30 of a fall-back night
    for a daily key — cannot key a late run to the wrong period, so their gap does not count.)

    Cached per day: every pass checks the spec, and fire-time arithmetic is the dearest part of a pass.
    """
    day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return _shortest_gap(schedule, day)


@lru_cache(maxsize=4096)
def _shortest_gap(schedule: Schedule, start: datetime) -> timedelta | None:
    horizon = start + _GAP_HORIZON
    between_periods: timedelta | None = None
    any_two: timedelta | None = None  # when the fire cap ends the walk inside one period (`* * * * *` monthly)
    previous: datetime | None = None
    previous_key = ""
    for count, fire in enumerate(schedule.fires_after(start)):
        key = schedule.period_key_of(fire)
        if previous is not None:
            gap = fire - previous
            any_two = gap if any_two is None or gap < any_two else any_two
            if key != previous_key:
                between_periods = gap if between_periods is None or gap < between_periods else between_periods
        previous, previous_key = fire, key
        if fire > horizon or count >= _GAP_MAX_FIRES:
            break
    return between_periods if between_periods is not None else any_two


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
    syntax = _schedule_syntax_problem(spec.schedule)
    if syntax:
        problems.append(f"spec.schedule: {syntax}")
        return problems
    try:
        validate_schedule(spec.schedule)  # includes "never fires" (`0 0 30 2 *`)
    except ConfigError as exc:
        problems.append(f"spec.schedule: {exc}")
        return problems
    if spec.period not in PERIODS:
        return problems  # reported above; the gap is measured between periods
    gap = shortest_gap(spec.parsed_schedule, now)
    if gap is None:
        return problems  # one period in a year (`0 0 29 2 *` monthly): no late run can reach the next one
    window = spec.starting_deadline_seconds + spec.active_deadline_seconds
    if window >= gap.total_seconds():
        problems.append(
            f"spec.startingDeadlineSeconds + spec.activeDeadlineSeconds = {window}s must be shorter than the "
            f"shortest gap between two fires of {spec.schedule!r} ({int(gap.total_seconds())}s) of different periods, "
            "or a late run could overlap the next period"
        )
    return problems


# What the CronJob API accepts (robfig/cron's standard parser): numbers, `*`, `?`, ranges, lists, steps, month and
# weekday names, and the @ macros. Extensions the parser behind `Schedule` also knows (`L`, `W`, `#`, `H`) would
# pass here and then be refused by the API server on every retry, so they are rejected up front.
_CRON_MACROS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})
_CRON_NAMES: tuple[frozenset[str], ...] = (
    frozenset(),  # minute
    frozenset(),  # hour
    frozenset(),  # day of month
    frozenset({"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"}),
    frozenset({"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}),
)
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?,/-]+$")
_CRON_WORD = re.compile(r"[A-Za-z]+")


def _schedule_syntax_problem(schedule: str) -> str | None:
    """Why the CronJob API would refuse this schedule's syntax, or None."""
    text = schedule.strip()
    if text.startswith("@"):
        return None if text in _CRON_MACROS else f"{schedule!r} is not one of {', '.join(sorted(_CRON_MACROS))}"
    fields = text.split()
    if len(fields) != 5:
        return f"{schedule!r} must have five fields (minute hour day-of-month month day-of-week)"
    for field_value, names, label in zip(
        fields, _CRON_NAMES, ("minute", "hour", "day-of-month", "month", "day-of-week"), strict=True
    ):
        words = {w.upper() for w in _CRON_WORD.findall(field_value)}
        if not _CRON_FIELD.match(field_value) or not words <= names:
            return (
                f"{schedule!r}: the {label} field {field_value!r} is not accepted by Kubernetes CronJobs "
                "(numbers, *, ?, ranges a-b, lists a,b, steps /n, month and weekday names; no L, W, # or H)"
            )
    return None


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
