"""Child Jobs → CreditJob status and conditions. Pure (no I/O); `now` is passed in.

Rebuilt from the world on every pass, never carried over from the previous status (the kubebuilder CronJob
tutorial's rule): the child Jobs (scheduled by the CronJob controller, run-now and catch-up Jobs created by
`reconcile.py`) and the CronJob's own status. Only three things come from the previous status because nothing
in the world records them: `lastManualRunToken` and `catchUpThrough` (the operator's own bookkeeping, see
`missed_periods.py`), the given-up `missedPeriods`, the owed `failedPeriods`, the schedule in force and since when
(`scheduleHash`, `scheduleSince`), and each condition's `lastTransitionTime` when its status did not change.
`lastScheduleTime` and `lastSuccessfulTime` never go backward: a deleted CronJob takes its Jobs and its own status
with it, and the CreditJob must still remember what ran.

Also here: which finished runs still need their RunSucceeded / RunFailed Event (`runs_to_report`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from credit_jobs.domain.contract import Trigger
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.schedule import Schedule
from credit_operator.creditjob import (
    ANNOTATION_CRONJOB_SCHEDULED,
    ANNOTATION_GIVEN_UP,
    ANNOTATION_PERIOD_KEY,
    ANNOTATION_RUN_REPORTED,
    ANNOTATION_SCHEDULED_TIME,
    LABEL_CREDITJOB,
    LABEL_TRIGGER,
    CreditJob,
    format_time,
    parse_time,
)
from credit_operator.missed_periods import (
    MAX_FAILED_PERIODS,
    CatchUpPlan,
    FailedPeriod,
    failed_period_from_status,
    failed_period_to_status,
)

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
    reason: str = ""  # the failure condition's reason (BackoffLimitExceeded, DeadlineExceeded, PodFailurePolicy…)
    permanent: bool = False  # failed by the podFailurePolicy's exit-code-2 rule: retrying cannot help
    reported: bool = False  # its RunSucceeded / RunFailed Event was posted (annotation on the Job)
    given_up: tuple[str, ...] = ()  # the periods the pass that created it gave up (ANNOTATION_GIVEN_UP)

    @property
    def failure(self) -> str:
        """`Reason: message` of a failed Job's condition (the message alone when it says the same)."""
        if self.reason and self.message != self.reason:
            return f"{self.reason}: {self.message}"
        return self.message


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
    reason = ""
    if failed is not None:
        state = "failed"
        finished = parse_time(failed.get("lastTransitionTime")) or parse_time(status.get("completionTime"))
        message = str(failed.get("message") or failed.get("reason") or "failed")
        reason = str(failed.get("reason") or "")
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
        reason=reason,
        # The Job controller's reason when a podFailurePolicy FailJob rule matched; ours matches exit code 2 only.
        permanent=reason == "PodFailurePolicy",
        reported=bool(annotations.get(ANNOTATION_RUN_REPORTED)),
        given_up=tuple(k for k in str(annotations.get(ANNOTATION_GIVEN_UP) or "").split(",") if k),
    )


def child_jobs(jobs: Iterable[Mapping[str, Any]], creditjob: CreditJob) -> list[JobView]:
    """The Jobs of this CreditJob (by label: an API server may ignore label selectors, an emulator does)."""
    return [
        view_job(job, creditjob)
        for job in jobs
        if ((job.get("metadata") or {}).get("labels") or {}).get(LABEL_CREDITJOB) == creditjob.name
    ]


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
    cleared_through = _latest(
        [v.scheduled_time for v in views if v.trigger == Trigger.SCHEDULE and v.state == "succeeded"]
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


# Finished runs older than this when the operator first sees them get no Event (e.g. the Job history that exists
# when this version is first deployed): an Event reports news, not a backlog.
REPORT_WINDOW = timedelta(days=1)


def runs_to_report(views: Sequence[JobView], now: datetime) -> list[tuple[JobView, str, str, str]]:
    """(view, Event type, reason, message) for every finished run whose Event was not posted yet."""
    found = []
    for view in views:
        if view.reported or view.state not in ("succeeded", "failed"):
            continue
        if view.finished_at is not None and view.finished_at < now - REPORT_WINDOW:
            continue
        what = f"period {view.period_key}" if view.period_key else "the current period"
        if view.state == "succeeded":
            found.append((view, "Normal", "RunSucceeded", f"{view.trigger} run {view.name} for {what} succeeded"))
        else:
            why = view.failure
            if view.permanent:
                why += " (exit code 2: a configuration error, not retried automatically)"
            found.append((view, "Warning", "RunFailed", f"{view.trigger} run {view.name} for {what} failed: {why}"))
    return found


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
