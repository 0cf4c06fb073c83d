"""Child Jobs → CreditJob status and conditions. Pure (no I/O); `now` is passed in.

Rebuilt from the world on every pass, never carried over from the previous status (the kubebuilder CronJob
tutorial's rule): the child Jobs (scheduled by the CronJob controller, run-now and catch-up Jobs created by
`reconcile.py`) and the CronJob's own status. What nothing in the world records comes from the previous status: the
operator's own bookkeeping (`lastManualRunToken`, `catchUpThrough`), the given-up `missedPeriods`, the owed
`failedPeriods`, the schedule in force and since when (`scheduleHash`, `scheduleSince`), and each condition's
`lastTransitionTime` while its status holds. `lastScheduleTime` and `lastSuccessfulTime` never go backward: a deleted
CronJob takes its Jobs and its own status with it, and the CreditJob must still remember what ran.

The owed periods and the catch-up decisions come from `missed_periods.py`, the child Jobs' views from
`job_views.py`: a pass computes them once and hands them in (`Observed`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from credit_jobs.domain.contract import Trigger
from credit_jobs.domain.schedule import Schedule
from credit_operator.creditjob import CreditJob, format_time, parse_time
from credit_operator.job_views import JobView, child_jobs
from credit_operator.missed_periods import (
    CatchUpPlan,
    FailedPeriod,
    failed_period_to_status,
    recorded_given_up,
    track_failed_periods,
)

CONDITION_TYPES = ("Ready", "Suspended", "Failing", "Missed")


def next_fire_time(schedule: Schedule, now: datetime) -> datetime | None:
    """The first fire time after `now` (UTC)."""
    return schedule.next_fire(now)


def schedule_interval(schedule: Schedule, now: datetime) -> float:
    """Seconds between the wall-clock fire in force at `now` and the next one (an alert compares the age of the
    last success with 1.5 times this; a DST night does not shorten it)."""
    return schedule.interval(now)


@dataclass(frozen=True)
class Observed:
    """Status inputs the reconcile loop gathered or decided this pass."""

    problems: Sequence[str] = ()
    cronjob: Mapping[str, Any] | None = None
    plan: CatchUpPlan | None = None
    manual_token: str | None = None
    schedule_hash: str | None = None
    schedule_since: datetime | None = None
    # The owed periods the pass computed (`missed_periods.track_failed_periods`, then `mark_in_progress` for the Jobs
    # it created); None: computed here from the Jobs given (a status built outside a pass).
    failed: tuple[FailedPeriod, ...] | None = None


def _latest(times: Iterable[datetime | None]) -> datetime | None:
    present = [t for t in times if t is not None]
    return max(present) if present else None


def build_status(
    creditjob: CreditJob, jobs: Iterable[Mapping[str, Any]], observed: Observed, now: datetime
) -> dict[str, Any]:
    """The full `status` of a CreditJob (a merge patch replaces each field, lists included)."""
    views = child_jobs(jobs, creditjob)
    spec = creditjob.spec
    cron_status = (observed.cronjob or {}).get("status") or {}
    previous = creditjob.status

    active = sorted(v.name for v in views if v.state == "active")
    queued = sorted(v.name for v in views if v.state == "queued")
    # Never backward: the previous value is the CreditJob's memory of what ran (a deleted CronJob takes the rest).
    last_schedule = _latest(
        [v.scheduled_time for v in views]
        + [parse_time(cron_status.get("lastScheduleTime")), parse_time(previous.get("lastScheduleTime"))]
    )
    last_success = _latest(
        [v.finished_at for v in views if v.state == "succeeded"]
        + [parse_time(cron_status.get("lastSuccessfulTime")), parse_time(previous.get("lastSuccessfulTime"))]
    )
    failures = [v for v in views if v.state == "failed"]
    last_failed_view = max(failures, key=lambda v: v.finished_at or now, default=None)
    last_failed = last_failed_view.finished_at if last_failed_view else None
    started = [v for v in views if v.period_key]
    newest = max(started, key=lambda v: v.scheduled_time or v.created_at or now, default=None)
    next_run = None if spec.suspend or observed.problems else next_fire_time(spec.parsed_schedule, now)

    # Given-up periods stay reported until a scheduled run succeeds after they were noticed.
    missed_since = parse_time(previous.get("missedSince"))
    missed_keys: list[str] = list(previous.get("missedPeriods") or [])
    scheduled_success = _latest(
        [v.finished_at for v in views if v.state == "succeeded" and v.trigger == Trigger.SCHEDULE]
        + [parse_time(cron_status.get("lastSuccessfulTime"))]
    )
    if missed_since and scheduled_success and scheduled_success > missed_since:
        missed_keys, missed_since = [], None
    if observed.plan and observed.plan.given_up:
        missed_keys += [m.key for m in observed.plan.given_up if m.key not in missed_keys]
        missed_since = missed_since or now
    recovered = recorded_given_up(views)
    if recovered:  # a pass that gave them up died before its status write: its catch-up Jobs carry the decision
        missed_keys += [key for key in recovered if key not in missed_keys]
        missed_since = missed_since or now

    catch_up_running = sorted(
        v.period_key or v.name for v in views if v.trigger == Trigger.CATCH_UP and v.state in ("active", "queued")
    )
    # Owed periods from this pass's Jobs (retries just created show as in progress); an invalid spec keeps the list.
    failed = observed.failed
    if failed is None:
        failed = track_failed_periods(creditjob, [] if observed.problems else views, now)
    conditions = _conditions(
        creditjob,
        now=now,
        problems=observed.problems,
        last_failed=last_failed_view if last_failed and (not last_success or last_failed > last_success) else None,
        catch_up_running=catch_up_running,
        missed_keys=missed_keys,
        failed=failed,
    )
    # Also the catch-up Jobs' own fire times: a pass that created them and died before this write is not forgotten.
    through = _latest(
        [parse_time(previous.get("catchUpThrough")), observed.plan.through if observed.plan else None]
        + [v.scheduled_time for v in views if v.trigger == Trigger.CATCH_UP]
    )
    return {
        "observedGeneration": creditjob.generation,
        "cronJobName": creditjob.name if observed.cronjob is not None else None,
        "active": active,
        "queued": queued,
        "lastScheduleTime": format_time(last_schedule),
        "lastSuccessfulTime": format_time(last_success),
        "lastFailedTime": format_time(last_failed),
        "nextScheduleTime": format_time(next_run),
        "lastPeriodKey": newest.period_key if newest else previous.get("lastPeriodKey"),
        "lastManualRunToken": observed.manual_token or previous.get("lastManualRunToken"),
        "catchUpThrough": format_time(through),
        "missedPeriods": missed_keys,
        "missedSince": format_time(missed_since),
        "failedPeriods": [failed_period_to_status(f, spec.catch_up_retry_failed) for f in failed],
        "scheduleHash": observed.schedule_hash or previous.get("scheduleHash"),
        "scheduleSince": format_time(observed.schedule_since) or previous.get("scheduleSince"),
        "conditions": conditions,
    }


def _conditions(
    creditjob: CreditJob,
    *,
    now: datetime,
    problems: Sequence[str],
    last_failed: JobView | None,
    catch_up_running: Sequence[str],
    missed_keys: Sequence[str],
    failed: Sequence[FailedPeriod] = (),
) -> list[dict[str, Any]]:
    spec = creditjob.spec
    wanted: list[tuple[str, bool, str, str]] = []
    if problems:
        wanted.append(("Ready", False, "InvalidSpec", "; ".join(problems)))
    else:
        wanted.append(("Ready", True, "CronJobInSync", f"CronJob {creditjob.name} matches the spec"))
    if spec.suspend:
        wanted.append(("Suspended", True, "Suspended", spec.suspend_reason or "suspended (no reason given)"))
    else:
        wanted.append(("Suspended", False, "Scheduled", "runs on its schedule"))
    if last_failed is not None:
        wanted.append(("Failing", True, "JobFailed", f"Job {last_failed.name} failed: {last_failed.message}"))
    elif failed:
        wanted.append(("Failing", True, "PeriodsFailed", _owed_message(creditjob, failed)))
    else:
        wanted.append(("Failing", False, "NoRecentFailure", "the latest finished run did not fail"))
    if catch_up_running:
        wanted.append(("Missed", True, "CatchingUp", f"catching up missed periods {', '.join(catch_up_running)}"))
    elif missed_keys:
        wanted.append(
            (
                "Missed",
                True,
                "PeriodsMissed",
                f"periods {', '.join(missed_keys)} were missed and not caught up (catchUp.maxPeriods="
                f"{spec.catch_up_max_periods}); run one with `credit-jobs trigger {creditjob.name} "
                f"--period-key KEY`",
            )
        )
    else:
        wanted.append(("Missed", False, "NoMissedPeriods", "no missed fire times"))

    previous = {c.get("type"): c for c in creditjob.status.get("conditions") or []}
    result = []
    for kind, ok, reason, message in wanted:
        status = "True" if ok else "False"
        before = previous.get(kind) or {}
        since = before.get("lastTransitionTime") if before.get("status") == status else None
        result.append(
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": since or format_time(now),
                "observedGeneration": creditjob.generation,
            }
        )
    return result


def _owed_message(creditjob: CreditJob, failed: Sequence[FailedPeriod]) -> str:
    parts = []
    for period in failed:
        retry = period.next_retry(creditjob.spec.catch_up_retry_failed)
        if period.in_progress:
            parts.append(f"{period.key} (retrying)")
        elif retry is not None:
            parts.append(f"{period.key} (retry {period.attempts + 1} at {format_time(retry)})")
        else:
            parts.append(f"{period.key} (not retried automatically)")
    return (
        f"periods whose runs all failed are owed: {', '.join(parts)}; run one with "
        f"`credit-jobs trigger {creditjob.name} --period-key KEY`"
    )
