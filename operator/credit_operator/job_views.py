"""Child Jobs → what the operator reads of them (`JobView`), and which finished runs still need their RunSucceeded /
RunFailed Event. Pure (no I/O); `now` is passed in.

A Job is classified by the conditions the Job controller writes and the annotations the CronJob controller or the
operator wrote (its trigger, the fire time and period key it ran for, whether its Event was posted, the periods the
pass that created it gave up).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from credit_jobs.domain.contract import Trigger
from credit_jobs.domain.errors import ConfigError
from credit_operator.creditjob import (
    ANNOTATION_CRONJOB_SCHEDULED,
    ANNOTATION_GIVEN_UP,
    ANNOTATION_PERIOD_KEY,
    ANNOTATION_RUN_REPORTED,
    ANNOTATION_SCHEDULED_TIME,
    LABEL_CREDITJOB,
    LABEL_TRIGGER,
    CreditJob,
    parse_time,
)


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
