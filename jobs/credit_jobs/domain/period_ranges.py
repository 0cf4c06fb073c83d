"""Period keys as operators type them for the ops commands (`rollback`, `backfill`): which granularity a key is,
and the keys of a range `--from K1 --to K2`, oldest first. Pure functions (no I/O); bad input is a one-line ConfigError
(exit 2) raised before anything connects.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.period_keys import Period, format_key, period_start

MAX_UNCONFIRMED_PERIODS = 24  # a longer backfill needs --yes
_UTC = ZoneInfo("UTC")
# A step that surely lands inside the next period from any period's start (months: 31 days < 2 months).
_STEP = {
    Period.MONTHLY: timedelta(days=31),
    Period.WEEKLY: timedelta(days=7),
    Period.DAILY: timedelta(days=1),
}


def _shown(key: str) -> str:
    return repr(key if len(key) <= 40 else key[:40] + "…")


def period_of_key(key: str, *, option: str = "--period-key") -> Period:
    """The granularity whose canonical form `key` is (monthly, weekly or daily; hourly keys are not for ops)."""
    for period in _STEP:
        try:
            period_start(key, period, _UTC)
            return period
        except ConfigError:
            continue
    raise ConfigError(
        f"{option} {_shown(key)} is not a period key: use e.g. 2026-11 (monthly), 2026-W48 (weekly) "
        "or 2026-11-28 (daily)"
    )


def period_range(first: str, last: str, *, now: datetime, yes: bool) -> tuple[Period, list[str]]:
    """The keys from `first` to `last` inclusive, oldest first. Refused: keys of two granularities, a reversed range,
    a period that has not started yet (`now`), more than MAX_UNCONFIRMED_PERIODS periods without `yes`."""
    period = period_of_key(first, option="--from")
    if period_of_key(last, option="--to") is not period:
        raise ConfigError(f"--from {_shown(first)} and --to {_shown(last)} are different kinds of period: use one kind")
    start, end = period_start(first, period, _UTC), period_start(last, period, _UTC)
    if end < start:
        raise ConfigError(f"--from {first} is after --to {last}: the range is reversed; swap them")
    if end > now:
        current = format_key(now.astimezone(_UTC), period)
        raise ConfigError(f"--to {last} is in the future (the current period is {current}): stop at {current}")
    keys = [first]
    moment = start
    while keys[-1] != last:
        moment = period_start(format_key(moment + _STEP[period], period), period, _UTC)
        keys.append(format_key(moment, period))
        if len(keys) > MAX_UNCONFIRMED_PERIODS and not yes:
            raise ConfigError(
                f"--from {first} --to {last} is more than {MAX_UNCONFIRMED_PERIODS} periods: pass --yes to run them all"
            )
    return period, keys


def check_jobs_period(key: str, key_period: Period, job_period: Period, source: str, *, option: str) -> None:
    """Refuse a key of another granularity than the job's: a daily key for a monthly job would hand out the whole
    monthly amount once a day. `source` says where the job's period came from."""
    if key_period is not job_period:
        raise ConfigError(
            f"{option} {_shown(key)} is a {key_period.value} period key, but the job's period is {job_period.value} "
            f"({source}): use {job_period.value} keys, or set CREDITJOB_PERIOD={key_period.value} for a "
            f"{key_period.value} job"
        )
