"""Child Jobs → status and conditions, rebuilt from the world (as the CronJob controller and kubelet leave it)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import pytest

from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.schedule import Schedule
from credit_operator.missed_periods import CatchUpPlan, MissedPeriod
from credit_operator.status import Observed, build_status, next_fire_time, schedule_interval
from tests.support import creditjobs

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
CRON = {"metadata": {"name": "cj"}, "status": {}}


creditjob = functools.partial(
    creditjobs.creditjob, name="cj", namespace="ns", generation=4, created="2026-01-01T00:00:00Z"
)


def job(name: str, state: str, scheduled: str | None = None, trigger: str = "schedule", **extra: Any) -> dict[str, Any]:
    """A Job as the CronJob controller creates it and the Job controller updates its status."""
    annotations = {"batch.kubernetes.io/cronjob-scheduled-timestamp": scheduled} if scheduled else {}
    annotations.update(extra.get("annotations", {}))
    status: dict[str, Any] = {}
    if state == "succeeded":
        status = {
            "completionTime": extra["at"],
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": extra["at"]},
                {"type": "Complete", "status": "True", "lastTransitionTime": extra["at"]},
            ],
        }
    elif state == "failed":
        status = {
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "lastTransitionTime": extra["at"],
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ]
        }
    elif state == "active":
        status = {"active": 1, "startTime": scheduled}
    return {
        "metadata": {
            "name": name,
            "labels": {"credits.dev/creditjob": "cj", "credits.dev/trigger": trigger},
            "annotations": annotations,
            "creationTimestamp": scheduled,
        },
        "spec": {"suspend": True} if state == "queued" else {},
        "status": status,
    }


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_a_new_creditjob_is_ready_with_the_next_run_and_nothing_else() -> None:
    status = build_status(creditjob(), [], Observed(cronjob=CRON), NOW)
    assert status["nextScheduleTime"] == "2026-12-01T00:00:00Z"
    assert status["lastSuccessfulTime"] is None
    assert status["active"] == []
    assert status["observedGeneration"] == 4
    assert status["cronJobName"] == "cj"
    assert conditions(status) == {
        "Ready": ("True", "CronJobInSync"),
        "Suspended": ("False", "Scheduled"),
        "Failing": ("False", "NoRecentFailure"),
        "Missed": ("False", "NoMissedPeriods"),
    }


def test_times_come_from_the_child_jobs() -> None:
    jobs = [
        job("cj-1", "succeeded", "2026-09-01T00:00:00Z", at="2026-09-01T00:10:00Z"),
        job("cj-2", "failed", "2026-10-01T00:00:00Z", at="2026-10-01T00:20:00Z"),
        job("cj-3", "active", "2026-11-01T00:00:00Z"),
        {"metadata": {"name": "someone-elses", "labels": {"credits.dev/creditjob": "other"}}, "status": {}},
    ]
    status = build_status(creditjob(), jobs, Observed(cronjob=CRON), NOW)
    assert status["active"] == ["cj-3"]
    assert status["lastScheduleTime"] == "2026-11-01T00:00:00Z"
    assert status["lastSuccessfulTime"] == "2026-09-01T00:10:00Z"
    assert status["lastFailedTime"] == "2026-10-01T00:20:00Z"
    assert status["lastPeriodKey"] == "2026-11"
    assert conditions(status)["Failing"] == ("True", "JobFailed")
    failing = next(c for c in status["conditions"] if c["type"] == "Failing")
    assert "cj-2" in failing["message"]
    assert "backoff limit" in failing["message"]


def test_a_success_after_a_failure_clears_failing() -> None:
    jobs = [
        job("cj-2", "failed", "2026-10-01T00:00:00Z", at="2026-10-01T00:20:00Z"),
        job("cj-3", "succeeded", "2026-10-01T00:00:00Z", at="2026-10-01T01:05:00Z"),  # a rerun of October
        job("cj-4", "succeeded", "2026-11-01T00:00:00Z", at="2026-11-01T00:05:00Z"),
    ]
    status = build_status(creditjob(), jobs, Observed(cronjob=CRON), NOW)
    assert conditions(status)["Failing"] == ("False", "NoRecentFailure")
    assert status["failedPeriods"] == []


def test_a_failed_period_stays_owed_after_later_periods_succeed() -> None:
    jobs = [
        job("cj-2", "failed", "2026-10-01T00:00:00Z", at="2026-10-31T23:20:00Z"),  # October, run late
        job("cj-3", "succeeded", "2026-11-01T00:00:00Z", at="2026-11-01T00:05:00Z"),
    ]
    now = datetime(2026, 11, 1, 1, 0, tzinfo=UTC)  # the failure is news (within a day)
    status = build_status(creditjob(), jobs, Observed(cronjob=CRON), now)
    assert conditions(status)["Failing"] == ("True", "PeriodsFailed")
    (owed,) = status["failedPeriods"]
    assert owed == {
        "period": "2026-10",
        "fireTime": "2026-10-01T00:00:00Z",
        "attempts": 1,
        "failedJobs": ["cj-2"],
        "lastFailedTime": "2026-10-31T23:20:00Z",
        "reason": "BackoffLimitExceeded: Job has reached the specified backoff limit",
        "permanent": False,
        "nextRetryTime": "2026-10-31T23:30:00Z",
    }
    # The failed Job pruned by the history limit: the period is still owed, remembered in status.
    later = build_status(creditjob(status=status), jobs[1:], Observed(cronjob=CRON), NOW)  # weeks later, too
    assert later["failedPeriods"] == status["failedPeriods"]


def test_the_previous_status_is_not_trusted_for_observed_fields() -> None:
    stale = {"active": ["gone"], "queued": ["gone-too"]}
    status = build_status(creditjob(status=stale), [], Observed(cronjob=CRON), NOW)
    assert status["active"] == []
    assert status["queued"] == []


def test_what_ran_is_remembered_when_the_cronjob_and_its_jobs_are_gone() -> None:
    before = {"lastSuccessfulTime": "2026-11-01T00:30:00Z", "lastScheduleTime": "2026-11-01T00:00:00Z"}
    status = build_status(creditjob(status=before), [], Observed(cronjob=CRON), NOW)
    assert status["lastSuccessfulTime"] == "2026-11-01T00:30:00Z"
    assert status["lastScheduleTime"] == "2026-11-01T00:00:00Z"
    # ...and newer runs still move them forward.
    newer = [job("cj-12", "succeeded", "2026-12-01T00:00:00Z", at="2026-12-01T00:10:00Z")]
    status = build_status(creditjob(status=before), newer, Observed(cronjob=CRON), NOW)
    assert status["lastScheduleTime"] == "2026-12-01T00:00:00Z"


def test_the_cronjob_status_fills_in_when_jobs_were_cleaned_up() -> None:
    cron = {
        "metadata": {"name": "cj"},
        "status": {"lastScheduleTime": "2026-11-01T00:00:00Z", "lastSuccessfulTime": "2026-11-01T00:09:00Z"},
    }
    status = build_status(creditjob(), [], Observed(cronjob=cron), NOW)
    assert status["lastScheduleTime"] == "2026-11-01T00:00:00Z"
    assert status["lastSuccessfulTime"] == "2026-11-01T00:09:00Z"


def test_suspension_shows_the_reason_and_no_next_run() -> None:
    status = build_status(creditjob(suspend=True, suspendReason="migration"), [], Observed(cronjob=CRON), NOW)
    assert status["nextScheduleTime"] is None
    suspended = next(c for c in status["conditions"] if c["type"] == "Suspended")
    assert (suspended["status"], suspended["message"]) == ("True", "migration")


def test_an_invalid_spec_is_not_ready_with_the_reason() -> None:
    status = build_status(creditjob(), [], Observed(problems=["spec.timeZone: unknown"], cronjob=CRON), NOW)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "InvalidSpec", "spec.timeZone: unknown")
    assert status["nextScheduleTime"] is None


def test_transition_times_are_kept_while_a_condition_holds() -> None:
    before = build_status(creditjob(), [], Observed(cronjob=CRON), datetime(2026, 11, 1, tzinfo=UTC))
    after = build_status(creditjob(status=before), [], Observed(cronjob=CRON), NOW)
    assert after["conditions"] == before["conditions"]
    flipped = build_status(creditjob(status=before, suspend=True), [], Observed(cronjob=CRON), NOW)
    suspended = next(c for c in flipped["conditions"] if c["type"] == "Suspended")
    assert suspended["lastTransitionTime"] == "2026-11-28T12:00:00Z"


def test_catch_up_in_progress_and_given_up_periods_show_as_missed() -> None:
    queued = job(
        "cj-c-1",
        "queued",
        annotations={"credits.dev/period-key": "2026-10", "credits.dev/scheduled-time": "2026-10-01T00:00:00Z"},
        trigger="catch-up",
    )
    plan = CatchUpPlan(
        to_run=(MissedPeriod("2026-10", datetime(2026, 10, 1, tzinfo=UTC)),),
        given_up=(MissedPeriod("2026-09", datetime(2026, 9, 1, tzinfo=UTC)),),
        through=datetime(2026, 10, 1, tzinfo=UTC),
    )
    status = build_status(creditjob(), [queued], Observed(cronjob=CRON, plan=plan), NOW)
    assert status["queued"] == ["cj-c-1"]
    assert status["active"] == []
    assert conditions(status)["Missed"] == ("True", "CatchingUp")
    assert status["missedPeriods"] == ["2026-09"]
    assert status["catchUpThrough"] == "2026-10-01T00:00:00Z"

    # once the catch-up is done, the given-up period is still reported...
    done = job(
        "cj-c-1",
        "succeeded",
        annotations={"credits.dev/period-key": "2026-10"},
        trigger="catch-up",
        at="2026-11-28T12:30:00Z",
    )
    later = build_status(creditjob(status=status), [done], Observed(cronjob=CRON), NOW)
    assert conditions(later)["Missed"] == ("True", "PeriodsMissed")
    assert "2026-09" in next(c for c in later["conditions"] if c["type"] == "Missed")["message"]
    # ...until a scheduled run succeeds
    scheduled = job("cj-9", "succeeded", "2026-12-01T00:00:00Z", at="2026-12-01T00:05:00Z")
    cleared = build_status(
        creditjob(status=later), [done, scheduled], Observed(cronjob=CRON), datetime(2026, 12, 1, 1, tzinfo=UTC)
    )
    assert conditions(cleared)["Missed"] == ("False", "NoMissedPeriods")
    assert cleared["missedPeriods"] == []


def test_run_now_token_is_recorded() -> None:
    status = build_status(
        creditjob(status={"lastManualRunToken": "old"}), [], Observed(cronjob=CRON, manual_token="new"), NOW
    )
    assert status["lastManualRunToken"] == "new"
    assert (
        build_status(creditjob(status={"lastManualRunToken": "old"}), [], Observed(cronjob=CRON), NOW)[
            "lastManualRunToken"
        ]
        == "old"
    )


def test_next_fire_and_interval() -> None:
    shanghai = Schedule.parse("0 0 1 * *", "Asia/Shanghai")
    assert next_fire_time(shanghai, NOW) == datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
    assert schedule_interval(Schedule.parse("0 0 1 * *"), NOW) == 30 * 86400  # 1 Nov → 1 Dec
    assert schedule_interval(Schedule.parse("@hourly"), NOW) == 3600
    # A schedule that never fires is refused when the spec is parsed (spec_checks reports it), not evaluated here.
    with pytest.raises(ConfigError, match="never fires"):
        Schedule.parse("0 0 30 2 *")
