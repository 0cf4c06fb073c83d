"""Child Jobs → CreditJob status and conditions. Pure (no I/O); `now` is passed in.

Rebuilt from the world on every pass, never carried over from the previous status (the kubebuilder CronJob
tutorial's rule): the child Jobs (scheduled by the CronJob controller, run-now and catch-up Jobs created by
`reconcile.py`) and the CronJob's own status. Only three things come from the previous status because nothing
in the world records them: `lastManualRunToken` and `catchUpThrough` (the operator's own bookkeeping, see
`missed_periods.py`), the given-up `missedPeriods`, and each condition's `lastTransitionTime` when its status
did not change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from credit_jobs.domain.contract import Trigger
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.schedule import Schedule
from credit_operator.creditjob import (
    ANNOTATION_CRONJOB_SCHEDULED,
    ANNOTATION_PERIOD_KEY,
    ANNOTATION_SCHEDULED_TIME,
    LABEL_CREDITJOB,
    LABEL_TRIGGER,
    CreditJob,
    format_time,
    parse_time,
)
from credit_operator.missed_periods import CatchUpPlan

CONDITION_TYPES = ("Ready", "Suspended", "Failing", "Missed")


@dataclass(frozen=True)
class JobView:
    """What the status needs from one child Job."""

    name: str
    trigger: str  # schedule | manual | catch-up
    state: str  # active | queued | succeeded | failed
    scheduled_time: datetime | None  # the fire time it ran for (None for manual runs)
    period_key: str | None
    created_at: datetime | None
    finished_at: datetime | None
    message: str


def _condition(job: Mapping[str, Any], *types: str) -> Mapping[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in types and cond.get("status") == "True":
            return dict(cond)
    return None


def view_job(job: Mapping[str, Any], creditjob: CreditJob) -> JobView:
    """Classify one Job by the conditions the Job controller writes (Complete / Failed, 1.31+ also
    SuccessCriteriaMet / FailureTarget) and the annotations the CronJob controller or we wrote."""
    meta = job.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    status = job.get("status") or {}
    succeeded = _condition(job, "Complete", "SuccessCriteriaMet")
    failed = _condition(job, "Failed", "FailureTarget")
    if failed is not None:
        state = "failed"
        finished = parse_time(failed.get("lastTransitionTime")) or parse_time(status.get("completionTime"))
        message = str(failed.get("message") or failed.get("reason") or "failed")
    elif succeeded is not None:
        state = "succeeded"
        finished = parse_time(status.get("completionTime")) or parse_time(succeeded.get("lastTransitionTime"))
        message = ""
    else:
        state = "queued" if (job.get("spec") or {}).get("suspend") else "active"
        finished, message = None, ""
    scheduled = parse_time(annotations.get(ANNOTATION_CRONJOB_SCHEDULED)) or parse_time(
        annotations.get(ANNOTATION_SCHEDULED_TIME)
    )
    key = annotations.get(ANNOTATION_PERIOD_KEY)
    if not key and scheduled is not None:
        try:
            key = creditjob.spec.parsed_schedule.period_key_of(scheduled)
        except ConfigError:
            key = None
    return JobView(
        name=str(meta.get("name", "")),
        trigger=str((meta.get("labels") or {}).get(LABEL_TRIGGER, Trigger.SCHEDULE.value)),
        state=state,
        scheduled_time=scheduled,
        period_key=key,
        created_at=parse_time(meta.get("creationTimestamp")),
        finished_at=finished,
        message=message,
    )


def child_jobs(jobs: Iterable[Mapping[str, Any]], creditjob: CreditJob) -> list[JobView]:
    """The Jobs of this CreditJob (by label: an API server may ignore label selectors, an emulator does)."""
    return [
        view_job(job, creditjob)
        for job in jobs
        if ((job.get("metadata") or {}).get("labels") or {}).get(LABEL_CREDITJOB) == creditjob.name
    ]


def anchor_time(
    creditjob: CreditJob, views: Sequence[JobView], cronjob: Mapping[str, Any] | None, now: datetime
) -> datetime:
    """The latest scheduled time the world shows; fire times after it may be missed (see missed_periods)."""
    candidates: list[datetime | None] = [v.scheduled_time for v in views]
    if cronjob is not None:
        candidates.append(parse_time((cronjob.get("status") or {}).get("lastScheduleTime")))
    candidates.append(parse_time(creditjob.status.get("catchUpThrough")))
    found = [c for c in candidates if c is not None]
    if found:
        return max(found)
    # Never ran: nothing before the CreditJob existed counts as missed (and without a creation time, nothing).
    return creditjob.created_at or now


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
    last_schedule = _latest([v.scheduled_time for v in views] + [parse_time(cron_status.get("lastScheduleTime"))])
    last_success = _latest(
        [v.finished_at for v in views if v.state == "succeeded"] + [parse_time(cron_status.get("lastSuccessfulTime"))]
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

    catch_up_running = sorted(
        v.period_key or v.name for v in views if v.trigger == Trigger.CATCH_UP and v.state in ("active", "queued")
    )
    conditions = _conditions(
        creditjob,
        now=now,
        problems=observed.problems,
        last_failed=last_failed_view if last_failed and (not last_success or last_failed > last_success) else None,
        catch_up_running=catch_up_running,
        missed_keys=missed_keys,
    )
    through = _latest([parse_time(previous.get("catchUpThrough")), observed.plan.through if observed.plan else None])
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
