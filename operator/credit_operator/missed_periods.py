"""Missed fire times → the catch-up plan: which periods to run now, which are given up. Pure (no I/O).

Planned anew on every pass (start-up, resync, child Job change). A fire time is *missed* when it lies after the anchor
(the latest scheduled time the world shows: child Jobs, the CronJob's status, the CreditJob's own
`status.catchUpThrough` bookkeeping, or else its creation time), its starting deadline has passed (until then the
CronJob controller may still start it, and we must not race it), and no child Job already carries its period key. Missed
fire times are grouped by period key; the newest `catchUp.maxPeriods` keys are planned (returned oldest first, the order
the ledger expects), older ones are reported as given up.

A period whose runs all failed is not covered: it is *owed* (`FailedPeriod`, kept in `status.failedPeriods` by
`status.py`) and retried here (`plan_retries`) up to RETRY_MAX_ATTEMPTS runs in all, the n-th retry waiting
RETRY_BACKOFF * 2**(n-1) after the latest failure. A permanent failure (exit code 2: configuration error, the
Job failed by its podFailurePolicy) stays owed but is never retried automatically — retrying cannot help.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from credit_jobs.domain.schedule import Schedule
from credit_operator.creditjob import format_time, parse_time

# Walking back from now over an every-minute schedule after a month of downtime would take 40 000 steps;
# past this many fire times we stop and report the periods seen so far (older ones count as given up
# without being listed one by one).
MAX_FIRES_SCANNED = 5000

# Failed periods: at most this many runs per period (the first one included), spaced 10, 20, … minutes after the
# latest failure; each run has its own pod retries (spec.backoffLimit) on top. Past the bound the period stays
# owed (status, Failing condition, the creditjobs_failed_periods gauge) until someone runs it by hand.
RETRY_MAX_ATTEMPTS = 3
RETRY_BACKOFF = timedelta(minutes=10)
# Owed periods kept in status at most (the newest); older ones are dropped with a Warning.
MAX_FAILED_PERIODS = 24


@dataclass(frozen=True)
class MissedPeriod:
    """One missed period: its key and the (first) fire time of it that was missed."""

    key: str
    fire_time: datetime


@dataclass(frozen=True)
class CatchUpPlan:
    """What to do about missed fire times."""

    to_run: tuple[MissedPeriod, ...]  # oldest first, at most max_periods
    given_up: tuple[MissedPeriod, ...]  # older missed periods beyond the cap (or all of them when catch-up is off)
    through: datetime | None  # the newest missed fire time considered: the next anchor

    @property
    def missed(self) -> tuple[MissedPeriod, ...]:
        return self.given_up + self.to_run


def missed_fire_times(
    schedule: Schedule, anchor: datetime, now: datetime, starting_deadline_seconds: int
) -> list[datetime]:
    """Fire times t with anchor < t and t + deadline < now, newest first, at most MAX_FIRES_SCANNED (UTC).

    Both fires of a repeated wall-clock hour count (the CronJob controller starts both; an hourly schedule gives
    them two period keys).
    """
    cutoff = now - timedelta(seconds=starting_deadline_seconds)
    if cutoff <= anchor:
        return []
    found: list[datetime] = []
    for fire in schedule.fires_at_or_before(cutoff):
        if fire <= anchor or len(found) >= MAX_FIRES_SCANNED:
            break
        if fire < cutoff:
            found.append(fire)
    return found


def plan_catch_up(
    *,
    schedule: Schedule,
    anchor: datetime,
    now: datetime,
    starting_deadline_seconds: int,
    max_periods: int,
    covered_keys: Collection[str] = (),
) -> CatchUpPlan:
    """The catch-up plan for one CreditJob (see the module docstring for the rules)."""
    fires = missed_fire_times(schedule, anchor, now, starting_deadline_seconds)
    if not fires:
        return CatchUpPlan((), (), None)
    # Newest first; the first fire time seen per key is its newest — keep the oldest fire time of each key
    # instead, so the pinned run belongs to the start of the period as a scheduled run would have.
    by_key: dict[str, datetime] = {}
    for fire in fires:
        by_key[schedule.period_key_of(fire)] = fire
    missed = [MissedPeriod(key, fire) for key, fire in by_key.items() if key not in covered_keys]
    missed.sort(key=lambda m: m.fire_time)
    cap = max(max_periods, 0)
    to_run = tuple(missed[max(len(missed) - cap, 0) :]) if cap else ()
    given_up = tuple(missed[: len(missed) - len(to_run)])
    return CatchUpPlan(to_run=to_run, given_up=given_up, through=fires[0])


@dataclass(frozen=True)
class FailedPeriod:
    """A period whose runs all failed, so it is still owed (one entry of `status.failedPeriods`)."""

    key: str
    fire_time: datetime | None  # the fire time its runs were pinned to (a retry is pinned to it too)
    failed_jobs: tuple[str, ...]  # every failed Job seen for it (kept after the Jobs are pruned): the attempts
    last_failed: datetime | None
    reason: str  # the latest failure's reason / message
    permanent: bool = False  # exit code 2: never retried automatically
    in_progress: bool = False  # a run of it is active or queued now

    @property
    def attempts(self) -> int:
        return len(self.failed_jobs)

    def next_retry(self, retry_enabled: bool) -> datetime | None:
        """When the next retry is due; None when it will not be retried automatically."""
        if not retry_enabled or self.permanent or self.attempts >= RETRY_MAX_ATTEMPTS or self.last_failed is None:
            return None
        factor: int = 2 ** max(self.attempts - 1, 0)
        return self.last_failed + RETRY_BACKOFF * factor

    def retry_job_suffix(self) -> str:
        """What makes the retry's Job name unique: the period key and the attempt number (a rerun conflicts)."""
        return f"{self.key}/retry-{self.attempts + 1}"


def plan_retries(failed: Sequence[FailedPeriod], now: datetime, retry_enabled: bool) -> list[FailedPeriod]:
    """The owed periods to run again now, oldest first: not running, not permanent, bound not reached, due."""
    due = [f for f in failed if not f.in_progress and (at := f.next_retry(retry_enabled)) is not None and at <= now]
    return sorted(due, key=lambda f: (f.fire_time or now, f.key))


def failed_period_to_status(period: FailedPeriod, retry_enabled: bool) -> dict[str, Any]:
    """One `status.failedPeriods` entry (the CRD documents each field)."""
    return {
        "period": period.key,
        "fireTime": format_time(period.fire_time),
        "attempts": period.attempts,
        "failedJobs": list(period.failed_jobs),
        "lastFailedTime": format_time(period.last_failed),
        "reason": period.reason[:300],
        "permanent": period.permanent,
        "nextRetryTime": None if period.in_progress else format_time(period.next_retry(retry_enabled)),
    }


def failed_period_from_status(entry: Any) -> FailedPeriod | None:
    """The entry back (None when it is not one: a hand edit must not crash the pass)."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("period"), str):
        return None
    jobs = entry.get("failedJobs") or []
    return FailedPeriod(
        key=entry["period"],
        fire_time=parse_time(entry.get("fireTime")),
        failed_jobs=tuple(str(j) for j in jobs) if isinstance(jobs, list) else (),
        last_failed=parse_time(entry.get("lastFailedTime")),
        reason=str(entry.get("reason") or ""),
        permanent=bool(entry.get("permanent")),
    )
