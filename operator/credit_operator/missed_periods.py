"""Missed fire times → the catch-up plan (which periods to run now, which are given up); owed periods → retries.

Pure (no I/O), planned anew on every pass. The one rule: never race the CronJob controller — a fire time is missed
only once its starting deadline has passed and no child Job carries its period key (`plan_catch_up`). `plan_retries`
retries owed periods; `anchor_time`, `schedule_adoption`, `track_failed_periods` and `recorded_given_up` compute the
inputs of those decisions once per pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from credit_jobs.domain.contract import Trigger
from credit_jobs.domain.schedule import Schedule
from credit_operator.creditjob import CreditJob, format_time, parse_time
from credit_operator.job_views import REPORT_WINDOW, JobView

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
    """The catch-up plan for one CreditJob, planned anew on every pass (start-up, resync, child Job change).

    A fire time is *missed* when it lies after the anchor (the latest scheduled time the world shows: child Jobs, the
    CronJob's status, the CreditJob's own `status.catchUpThrough` bookkeeping, or else its creation time), its
    starting deadline has passed (until then the CronJob controller may still start it, and we must not race it), and
    no child Job already carries its period key. Missed fire times are grouped by period key; the newest
    `catchUp.maxPeriods` keys are planned (returned oldest first, the order the ledger expects), older ones are
    reported as given up.
    """
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
    """A period whose runs all failed, so it is still owed (one entry of `status.failedPeriods`).

    Failed runs do not cover a period: it is *owed* (kept in `status.failedPeriods` by `status.py`) and retried
    (`plan_retries`) up to RETRY_MAX_ATTEMPTS runs in all, the n-th retry waiting RETRY_BACKOFF * 2**(n-1) after the
    latest failure. A permanent failure (exit code 2: configuration error, the Job failed by its podFailurePolicy)
    stays owed but is never retried automatically — retrying cannot help.
    """

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


def anchor_time(
    creditjob: CreditJob,
    views: Sequence[JobView],
    cronjob: Mapping[str, Any] | None,
    now: datetime,
    schedule_since: datetime | None = None,
) -> datetime:
    """The latest scheduled time the world or the CreditJob's own memory shows, and never before the schedule in
    force was adopted; fire times after it may be missed (see missed_periods).

    The CreditJob's `status.lastScheduleTime` counts beside the child Jobs and the CronJob's status: both vanish
    with a deleted CronJob. `schedule_since` (see `schedule_adoption`) keeps fires of a schedule from before it was
    in force out of the count.
    """
    candidates: list[datetime | None] = [v.scheduled_time for v in views]
    if cronjob is not None:
        candidates.append(parse_time((cronjob.get("status") or {}).get("lastScheduleTime")))
    candidates.append(parse_time(creditjob.status.get("catchUpThrough")))
    candidates.append(parse_time(creditjob.status.get("lastScheduleTime")))
    candidates.append(schedule_since)
    found = [c for c in candidates if c is not None]
    if found:
        return max(found)
    # Never ran: nothing before the CreditJob existed counts as missed (and without a creation time, nothing).
    return creditjob.created_at or now


def schedule_hash(creditjob: CreditJob) -> str:
    """Identifies the schedule in force: expression, zone and period (any of them changes which fires are owed)."""
    spec = creditjob.spec
    return hashlib.sha256(f"{spec.schedule}\n{spec.time_zone}\n{spec.period}".encode()).hexdigest()[:16]


def schedule_adoption(creditjob: CreditJob, now: datetime, invalid: bool) -> tuple[str | None, datetime | None]:
    """(`scheduleHash`, `scheduleSince`): the schedule in force and when it was adopted.

    Unchanged schedule → the recorded time. Changed → `now` (the pass that sees the change; the CronJob is updated
    in the same pass). First seen (a new CreditJob, or one from before this field) → its creation time, so catch-up
    after downtime works as before. An invalid spec changes nothing: the last good schedule keeps running.
    """
    previous_hash = creditjob.status.get("scheduleHash")
    previous_since = parse_time(creditjob.status.get("scheduleSince"))
    if invalid:
        return (str(previous_hash) if previous_hash else None), previous_since
    current = schedule_hash(creditjob)
    if previous_hash == current:
        return current, previous_since or creditjob.created_at
    if not previous_hash:
        return current, creditjob.created_at or now
    return current, now


_EARLIEST = datetime.min.replace(tzinfo=UTC)


_LATEST = datetime.max.replace(tzinfo=UTC)


def track_failed_periods(creditjob: CreditJob, views: Sequence[JobView], now: datetime) -> tuple[FailedPeriod, ...]:
    """The owed periods: every period key whose runs all failed, from the child Jobs plus the previous
    `status.failedPeriods` (failed Jobs are pruned by the history limits, or go with a deleted CronJob).

    A success for the key settles it; an active or queued run marks it in progress. A failed Job makes a period
    newly owed only while it is news: not yet reported (`reported` is set after the status recording it was
    written) and finished within REPORT_WINDOW — so a failed Job kept by the history limits after its period was
    settled (the successful rerun pruned first), or history from before this version, never makes it owed again.
    Oldest first, at most MAX_FAILED_PERIODS (the newest).
    """
    previous: dict[str, FailedPeriod] = {}
    for entry in creditjob.status.get("failedPeriods") or []:
        period = failed_period_from_status(entry)
        if period is not None:
            previous[period.key] = period
    by_key: dict[str, list[JobView]] = {}
    for view in views:
        if view.period_key:
            by_key.setdefault(view.period_key, []).append(view)
    owed: list[FailedPeriod] = []
    for key in dict.fromkeys([*previous, *by_key]):
        runs = by_key.get(key, [])
        failed = [v for v in runs if v.state == "failed"]
        if key not in previous:
            failed = [v for v in failed if _is_news(v, now)]
        if any(v.state == "succeeded" for v in runs) or (key not in previous and not failed):
            continue
        owed.append(_merge_failed(previous.get(key), key, runs, failed))
    owed.sort(key=lambda f: (f.fire_time or f.last_failed or _LATEST, f.key))
    return tuple(owed[-MAX_FAILED_PERIODS:])


def recorded_given_up(views: Sequence[JobView]) -> list[str]:
    """Given-up periods that catch-up Jobs carry (ANNOTATION_GIVEN_UP) and no later scheduled run has cleared: a
    scheduled run that succeeded for a fire time after the catch-up Job's ends the report, as for the status."""
    cleared_through = max(
        (
            v.scheduled_time
            for v in views
            if v.trigger == Trigger.SCHEDULE and v.state == "succeeded" and v.scheduled_time
        ),
        default=None,
    )
    keys: list[str] = []
    for view in views:
        if not view.given_up:
            continue
        if cleared_through is not None and view.scheduled_time is not None and cleared_through > view.scheduled_time:
            continue
        keys += [key for key in view.given_up if key not in keys]
    return keys


def _is_news(view: JobView, now: datetime) -> bool:
    return not view.reported and (view.finished_at is None or view.finished_at >= now - REPORT_WINDOW)


# Failed Jobs remembered per owed period (the attempts count): far above RETRY_MAX_ATTEMPTS, bounded for hand reruns.
MAX_FAILED_JOBS = 10


def _merge_failed(
    before: FailedPeriod | None, key: str, runs: Sequence[JobView], failed: Sequence[JobView]
) -> FailedPeriod:
    newest = max(failed, key=lambda v: v.finished_at or _EARLIEST, default=None)
    fire_times = [v.scheduled_time for v in runs if v.scheduled_time is not None]
    names = list(before.failed_jobs if before else ()) + [v.name for v in failed]
    last = [t for t in [before.last_failed if before else None, *(v.finished_at for v in failed)] if t]
    return FailedPeriod(
        key=key,
        fire_time=(before.fire_time if before else None) or (min(fire_times) if fire_times else None),
        failed_jobs=tuple(dict.fromkeys(names))[-MAX_FAILED_JOBS:],
        last_failed=max(last) if last else None,
        reason=newest.failure if newest else (before.reason if before else ""),
        permanent=(before.permanent if before else False) or any(v.permanent for v in failed),
        in_progress=any(v.state in ("active", "queued") for v in runs),
    )


def mark_in_progress(failed: Sequence[FailedPeriod], new_jobs: Sequence[JobView]) -> tuple[FailedPeriod, ...]:
    """The owed periods once this pass's new Jobs exist: a period with a new active or queued run (a retry just
    created) is in progress. What `track_failed_periods` would answer over the pass's Jobs including the new ones:
    a new Job never failed yet, so it changes nothing else."""
    running = {v.period_key for v in new_jobs if v.period_key and v.state in ("active", "queued")}
    return tuple(dataclasses.replace(f, in_progress=True) if f.key in running else f for f in failed)
