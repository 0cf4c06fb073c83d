"""Owed periods without servers (fixed NOW): failed periods and their retries, the schedule in force, what ran,
and which finished runs still need their Event."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from credit_jobs.domain.errors import ConfigError
from credit_operator.job_views import child_jobs, runs_to_report
from credit_operator.missed_periods import (
    RETRY_MAX_ATTEMPTS,
    FailedPeriod,
    anchor_time,
    plan_catch_up,
    plan_retries,
    schedule_adoption,
    track_failed_periods,
)
from tests.support import creditjobs

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
FAILED_AT = datetime(2026, 11, 28, 12, 20, tzinfo=UTC)


creditjob = functools.partial(
    creditjobs.creditjob,
    name="cj",
    namespace="ns",
    generation=1,
    created="2026-01-01T00:00:00Z",
    schedule="0 3 * * *",
    period="daily",
)


def job(name: str, key: str, state: str, at: str = "2026-11-28T12:20:00Z", **extra: Any) -> dict[str, Any]:
    failure = {"type": "Failed", "status": "True", "lastTransitionTime": at}
    failure.update(extra.get("failure", {"reason": "BackoffLimitExceeded", "message": "backoff limit"}))
    conditions = {
        "failed": [failure],
        "succeeded": [{"type": "Complete", "status": "True", "lastTransitionTime": at}],
    }.get(state, [])
    return {
        "metadata": {
            "name": name,
            "labels": {"credits.dev/creditjob": "cj", "credits.dev/trigger": "catch-up"},
            "annotations": {
                "credits.dev/period-key": key,
                "credits.dev/scheduled-time": f"{key}T03:00:00Z",
                **extra.get("annotations", {}),
            },
        },
        "spec": {"suspend": True} if state == "queued" else {},
        "status": {"conditions": conditions, "completionTime": at}
        if state == "succeeded"
        else {"conditions": conditions},
    }


def owed(cj: Any, *jobs: dict[str, Any]) -> tuple[FailedPeriod, ...]:
    return track_failed_periods(cj, child_jobs(jobs, cj), NOW)


def test_a_period_whose_runs_all_failed_is_owed_and_a_success_settles_it() -> None:
    cj = creditjob()
    (period,) = owed(cj, job("a", "2026-11-25", "failed"), job("b", "2026-11-26", "succeeded"))
    assert (period.key, period.attempts, period.fire_time) == ("2026-11-25", 1, datetime(2026, 11, 25, 3, tzinfo=UTC))
    assert owed(cj, job("a", "2026-11-25", "failed"), job("r", "2026-11-25", "succeeded")) == ()


def test_retries_are_bounded_and_spaced_exponentially() -> None:
    cj = creditjob()
    first = owed(cj, job("a", "2026-11-25", "failed"))
    assert plan_retries(first, FAILED_AT + timedelta(minutes=9), True) == []
    assert [p.key for p in plan_retries(first, FAILED_AT + timedelta(minutes=10), True)] == ["2026-11-25"]
    assert first[0].retry_job_suffix() == "2026-11-25/retry-2"
    second = owed(cj, job("a", "2026-11-25", "failed"), job("r", "2026-11-25", "failed"))
    assert second[0].next_retry(True) == FAILED_AT + timedelta(minutes=20)
    fails = [job(f"j{i}", "2026-11-25", "failed") for i in range(RETRY_MAX_ATTEMPTS)]
    (exhausted,) = owed(cj, *fails)
    assert exhausted.next_retry(True) is None  # still owed, no longer automatic
    assert plan_retries((exhausted,), NOW + timedelta(days=30), True) == []


def test_exit_code_2_stays_owed_but_is_not_retried() -> None:
    failure = {"reason": "PodFailurePolicy", "message": "Container credit-jobs failed with exit code 2"}
    (period,) = owed(creditjob(), job("a", "2026-11-25", "failed", failure=failure))
    assert period.permanent
    assert plan_retries((period,), NOW + timedelta(days=1), True) == []


def test_retry_failed_off_or_a_run_in_progress_plans_no_retry() -> None:
    cj = creditjob()
    period = owed(cj, job("a", "2026-11-25", "failed"))
    assert plan_retries(period, NOW + timedelta(days=1), retry_enabled=False) == []
    running = owed(cj, job("a", "2026-11-25", "failed"), job("r", "2026-11-25", "queued"))
    assert running[0].in_progress
    assert plan_retries(running, NOW + timedelta(days=1), True) == []


def test_retry_failed_must_be_a_boolean() -> None:
    assert creditjob(catchUp={"retryFailed": False}).spec.catch_up_retry_failed is False
    assert creditjob().spec.catch_up_retry_failed is True
    with pytest.raises(ConfigError, match=r"spec.catchUp.retryFailed"):
        creditjob(catchUp={"retryFailed": "no"})


def test_a_finished_run_is_reported_once_and_old_history_not_at_all() -> None:
    cj = creditjob()
    jobs = [
        job("ok", "2026-11-26", "succeeded"),
        job("bad", "2026-11-25", "failed"),
        job("done", "2026-11-24", "succeeded", annotations={"credits.dev/run-reported": "succeeded"}),
        job("old", "2026-10-01", "succeeded", at="2026-10-01T03:10:00Z"),
        job("busy", "2026-11-27", "active"),
    ]
    found = {
        view.name: (kind, reason, message) for view, kind, reason, message in runs_to_report(child_jobs(jobs, cj), NOW)
    }
    assert sorted(found) == ["bad", "ok"]
    assert found["ok"][:2] == ("Normal", "RunSucceeded")
    kind, reason, message = found["bad"]
    assert (kind, reason) == ("Warning", "RunFailed")
    assert "period 2026-11-25" in message
    assert "BackoffLimitExceeded" in message


def test_the_schedule_in_force_is_recorded_and_a_change_restarts_the_count() -> None:
    monthly = creditjob(schedule="0 0 1 * *", period="monthly", created="2026-10-15T00:00:00Z")
    first_hash, since = schedule_adoption(monthly, NOW, invalid=False)
    assert since == datetime(2026, 10, 15, tzinfo=UTC)  # first seen: counted from creation (catch-up as before)
    recorded = {"scheduleHash": first_hash, "scheduleSince": "2026-10-15T00:00:00Z"}
    same = creditjob(status=recorded, schedule="0 0 1 * *", period="monthly", created="2026-10-15T00:00:00Z")
    assert schedule_adoption(same, NOW, invalid=False) == (first_hash, since)
    weekly = creditjob(status=recorded, schedule="0 0 * * 1", period="weekly", created="2026-10-15T00:00:00Z")
    new_hash, changed = schedule_adoption(weekly, NOW, invalid=False)
    assert new_hash != first_hash
    assert changed == NOW
    assert schedule_adoption(weekly, NOW, invalid=True) == (first_hash, since)  # an invalid spec changes nothing


def test_monthly_to_weekly_after_a_november_run_owes_no_earlier_weeks() -> None:
    weekly = creditjob(schedule="0 0 * * 1", period="weekly", created="2026-10-15T00:00:00Z")
    ran = [job("nov", "2026-11-01", "succeeded", annotations={"credits.dev/scheduled-time": "2026-11-01T00:00:00Z"})]
    anchor = anchor_time(weekly, child_jobs(ran, weekly), None, NOW, schedule_since=NOW)
    plan = plan_catch_up(
        schedule=weekly.spec.parsed_schedule, anchor=anchor, now=NOW, starting_deadline_seconds=3600, max_periods=3
    )
    assert plan.missed == ()
    # Without the recorded change the same inputs owe W46..W48 and give up W45 (what an earlier version did).
    anchor = anchor_time(weekly, child_jobs(ran, weekly), None, NOW)
    plan = plan_catch_up(
        schedule=weekly.spec.parsed_schedule, anchor=anchor, now=NOW, starting_deadline_seconds=3600, max_periods=3
    )
    assert [m.key for m in plan.to_run] == ["2026-W46", "2026-W47", "2026-W48"]


def test_moving_the_day_of_month_owes_nothing_before_the_change() -> None:
    moved = creditjob(schedule="0 0 15 * *", period="monthly", created="2026-11-10T09:00:00Z")
    anchor = anchor_time(moved, [], None, NOW, schedule_since=NOW)
    plan = plan_catch_up(
        schedule=moved.spec.parsed_schedule, anchor=anchor, now=NOW, starting_deadline_seconds=3600, max_periods=3
    )
    assert plan.missed == ()


def test_the_creditjobs_memory_of_what_ran_anchors_catch_up() -> None:
    monthly = creditjob(status={"lastScheduleTime": "2026-11-01T00:00:00Z"}, schedule="0 0 1 * *", period="monthly")
    assert anchor_time(monthly, [], None, NOW) == datetime(2026, 11, 1, tzinfo=UTC)


def test_a_failed_job_outliving_its_settled_period_is_not_owed_again() -> None:
    # 2026-11-25 failed, was recorded as owed and reported, then settled by a rerun whose Job the successful-history
    # limit pruned first: the failed Job alone must not make the period owed again.
    reported = {"credits.dev/run-reported": "failed"}
    assert owed(creditjob(), job("a", "2026-11-25", "failed", annotations=reported)) == ()
    # Nor does a failure from before this version (older than the report window, never reported).
    assert owed(creditjob(), job("old", "2026-10-01", "failed", at="2026-10-01T03:10:00Z")) == ()
    # Once owed, every failed Job of the period counts, reported or not.
    previous = {
        "failedPeriods": [{"period": "2026-11-25", "failedJobs": ["a"], "lastFailedTime": "2026-11-28T12:20:00Z"}]
    }
    (period,) = owed(
        creditjob(status=previous),
        job("a", "2026-11-25", "failed", annotations=reported),
        job("r", "2026-11-25", "failed"),
    )
    assert period.failed_jobs == ("a", "r")
