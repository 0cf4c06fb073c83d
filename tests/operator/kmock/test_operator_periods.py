"""Which periods are owed, at production defaults (`CREDITJOBS_RESYNC_SECONDS` unset: 60 s).

The resync never fires within a test, so every decision here comes from watch events (a Job finishing, the
CronJob deleted, the CreditJob edited). The operator's clock is pinned (`frozen_clock`); kmock runs no
controllers, so the test plays the CronJob controller and the Job controller (see conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from operator_kmock_support import (
    CJ_PATH,
    CRONJOBS_PATH,
    JOBS_PATH,
    MERGE,
    NOW,
    PERMANENT,
    STARTUP,
    condition,
    creditjob,
    creditjob_status,
    events_for,
    finish,
    get,
    jobs_of,
    one_failed_catch_up,
    operator,
    reasons,
    reconcile_passes,
    scheduled_job,
    until,
)

from credit_operator import metrics


@pytest.fixture(autouse=True)
def production_resync(kube: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDITJOBS_RESYNC_SECONDS")  # the default, 60 s


def key_of(job: dict[str, Any]) -> str:
    return str(job["metadata"]["annotations"].get("credits.dev/period-key", ""))


def running(kube: Any, ns: str, name: str) -> list[dict[str, Any]]:
    return [
        j
        for j in jobs_of(kube, ns, name)
        if not j["spec"].get("suspend") and not (j.get("status") or {}).get("conditions")
    ]


def failed_gauge(ns: str, name: str) -> float | None:
    return metrics.REGISTRY.get_sample_value("creditjobs_failed_periods", {"creditjob": name, "namespace": ns})


async def touch(kube: Any, ns: str, name: str, value: str) -> None:
    """A label edit: an update the operator handles at once (the way to make it look again without a resync)."""
    await kube.patch(f"{CJ_PATH.format(ns=ns)}/{name}", json={"metadata": {"labels": {"touch": value}}}, headers=MERGE)


async def test_a_failed_catch_up_period_stays_owed_is_retried_and_every_run_is_an_event(
    kube: Any, frozen_clock: Callable[[datetime], None]
) -> None:
    frozen_clock(NOW)
    ns, name = "owed", "daily"
    body = creditjob(
        name, ns, created="2026-11-23T12:00:00Z", schedule="0 3 * * *", period="daily", catchUp={"maxPeriods": 5}
    )
    await kube.post(CJ_PATH.format(ns=ns), json=body)  # created while the operator was down: 24..28 are owed
    outcomes = {"2026-11-24": True, "2026-11-25": False, "2026-11-26": True, "2026-11-27": True, "2026-11-28": True}
    async with operator():
        await until(lambda: len(jobs_of(kube, ns, name)) == 5, what="five catch-up Jobs")
        for minute in range(10, 60, 10):  # Forbid: one at a time, oldest first
            (job,) = await until(lambda: running(kube, ns, name), what="one running catch-up Job")
            at = f"2026-11-28T12:{minute}:00Z"
            await finish(kube, ns, job["metadata"]["name"], outcomes[key_of(job)], at)
        await until(lambda: failed_gauge(ns, name) == 1, what="the failed-periods gauge")
        status = creditjob_status(kube, ns, name)
        (owed,) = status["failedPeriods"]
        assert owed["period"] == "2026-11-25"
        assert owed["attempts"] == 1
        assert owed["nextRetryTime"] == "2026-11-28T12:30:00Z"  # 10 minutes after the failure at 12:20
        failing = condition(kube, ns, name, "Failing")
        assert (failing["status"], failing["reason"]) == ("True", "PeriodsFailed")
        assert "2026-11-25" in failing["message"]
        assert "PeriodFailed" in reasons(kube, name)
        assert len(jobs_of(kube, ns, name)) == 5  # not retried before its backoff

        frozen_clock(datetime(2026, 11, 28, 12, 31, tzinfo=UTC))
        await touch(kube, ns, name, "1")
        (retry,) = await until(lambda: running(kube, ns, name), what="the retry of 2026-11-25")
        assert key_of(retry) == "2026-11-25"
        assert retry["metadata"]["labels"]["credits.dev/trigger"] == "catch-up"
        await finish(kube, ns, retry["metadata"]["name"], True, "2026-11-28T12:40:00Z")
        await until(lambda: failed_gauge(ns, name) == 0, what="nothing owed")
        assert creditjob_status(kube, ns, name)["failedPeriods"] == []
        assert condition(kube, ns, name, "Failing")["status"] == "False"

    # Every finished run is one Event, with its period key; a restart reports none of them again.
    def run_events() -> list[dict[str, Any]]:
        return [e for e in events_for(kube, name) if e["reason"] in ("RunSucceeded", "RunFailed")]

    await until(lambda: len(run_events()) == 6, what="six run Events")
    before = reconcile_passes()
    async with operator():
        await until(lambda: reconcile_passes() > before, what="a pass after the restart")
    events = run_events()
    assert len(events) == 6
    (failed,) = [e for e in events if e["reason"] == "RunFailed"]
    assert failed["type"] == "Warning"
    assert "2026-11-25" in failed["message"]
    assert "BackoffLimitExceeded" in failed["message"]
    succeeded = sorted(e["message"] for e in events if e["reason"] == "RunSucceeded")
    assert sum("2026-11-25" in m for m in succeeded) == 1
    assert all(e["type"] == "Normal" for e in events if e["reason"] == "RunSucceeded")


async def test_a_deleted_cronjob_and_its_jobs_do_not_rerun_periods_that_ran(
    kube: Any, frozen_clock: Callable[[datetime], None]
) -> None:
    frozen_clock(datetime(2026, 8, 15, tzinfo=UTC))
    ns, name = "gone", "monthly"
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob(name, ns, created="2026-08-15T00:00:00Z"))
        cron = await until(lambda: get(kube, "cronjobs", ns, name), what="CronJob")
        # The CronJob controller ran September, October and November (the operator saw each run finish).
        for month in ("09", "10", "11"):
            frozen_clock(datetime(2026, int(month), 1, 0, 5, tzinfo=UTC))  # each run as it happened
            job = f"{name}-{month}"
            await kube.post(JOBS_PATH.format(ns=ns), json=scheduled_job(cron, f"2026-{month}-01T00:00:00Z", job))
            await finish(kube, ns, job, True, f"2026-{month}-01T00:30:00Z")
        await until(
            lambda: creditjob_status(kube, ns, name).get("lastSuccessfulTime") == "2026-11-01T00:30:00Z", what="Nov"
        )
        frozen_clock(NOW)
        # `kubectl delete cronjob`: the garbage collector removes its Jobs (kmock has none: the test does).
        for month in ("09", "10", "11"):
            await kube.delete(f"{JOBS_PATH.format(ns=ns)}/{name}-{month}")
        await kube.delete(f"{CRONJOBS_PATH.format(ns=ns)}/{name}")
        recreated = await until(
            lambda: (c := get(kube, "cronjobs", ns, name)) and c["metadata"]["uid"] != cron["metadata"]["uid"] and c,
            what="the CronJob recreated",
        )
        assert recreated
        before = reconcile_passes()
        await touch(kube, ns, name, "1")  # one more pass, after the recreation
        await until(lambda: reconcile_passes() > before, what="a pass after the recreation")
    assert jobs_of(kube, ns, name) == []
    assert "PeriodsMissed" not in reasons(kube, name)
    assert "CatchUp" not in reasons(kube, name)
    status = creditjob_status(kube, ns, name)
    assert status["lastScheduleTime"] == "2026-11-01T00:00:00Z"
    assert status["lastSuccessfulTime"] == "2026-11-01T00:30:00Z"
    assert condition(kube, ns, name, "Missed")["reason"] == "NoMissedPeriods"


async def change_schedule(kube: Any, ns: str, name: str, **spec: Any) -> None:
    await kube.patch(f"{CJ_PATH.format(ns=ns)}/{name}", json={"spec": spec}, headers=MERGE)
    await until(
        lambda: (get(kube, "cronjobs", ns, name) or {})["spec"]["schedule"] == spec["schedule"],
        what="the CronJob updated",
    )
    await until(lambda: creditjob_status(kube, ns, name).get("observedGeneration") == 2, what="the status updated")


async def test_monthly_to_weekly_after_a_november_run_owes_no_earlier_weeks(
    kube: Any, frozen_clock: Callable[[datetime], None]
) -> None:
    frozen_clock(datetime(2026, 11, 1, 0, 5, tzinfo=UTC))
    ns, name = "toweekly", "grant"
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob(name, ns, created="2026-10-15T00:00:00Z"))
        cron = await until(lambda: get(kube, "cronjobs", ns, name), what="CronJob")
        await kube.post(JOBS_PATH.format(ns=ns), json=scheduled_job(cron, "2026-11-01T00:00:00Z", f"{name}-nov"))
        await finish(kube, ns, f"{name}-nov", True, "2026-11-01T00:30:00Z")
        await until(lambda: creditjob_status(kube, ns, name).get("lastSuccessfulTime"), what="the November run")

        frozen_clock(NOW)
        await change_schedule(kube, ns, name, schedule="0 0 * * 1", period="weekly")
    assert [j["metadata"]["name"] for j in jobs_of(kube, ns, name)] == [f"{name}-nov"]
    assert "PeriodsMissed" not in reasons(kube, name)
    status = creditjob_status(kube, ns, name)
    assert status["scheduleSince"] == "2026-11-28T12:00:00Z"
    assert status["missedPeriods"] == []
    assert status["nextScheduleTime"] == "2026-11-30T00:00:00Z"


async def test_moving_the_day_of_month_runs_nothing_until_the_new_day_is_due(
    kube: Any, frozen_clock: Callable[[datetime], None]
) -> None:
    frozen_clock(datetime(2026, 11, 10, 9, 0, tzinfo=UTC))
    ns, name = "moveday", "grant"
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob(name, ns, created="2026-11-10T09:00:00Z"))
        await until(lambda: get(kube, "cronjobs", ns, name), what="CronJob")
        frozen_clock(NOW)
        await change_schedule(kube, ns, name, schedule="0 0 15 * *")
    assert jobs_of(kube, ns, name) == []
    assert "PeriodsMissed" not in reasons(kube, name)
    status = creditjob_status(kube, ns, name)
    assert status["nextScheduleTime"] == "2026-12-15T00:00:00Z"
    assert condition(kube, ns, name, "Missed")["reason"] == "NoMissedPeriods"


async def test_an_exit_code_2_failure_stays_owed_and_is_not_retried_at_the_default_resync(
    kube: Any, frozen_clock: Callable[[datetime], None]
) -> None:
    """The production-default twin of test_operator_retry_resync.py's exit-code-2 test: a watch event makes the
    operator look again long after any backoff, and still no retry (a configuration error fails again)."""
    frozen_clock(NOW)
    ns, name = "permanentdefault", "daily"
    async with operator():
        await one_failed_catch_up(kube, ns, name, PERMANENT)
        frozen_clock(NOW + timedelta(hours=14))  # long past any backoff, before the next fire (29 Nov 03:00)
        before = reconcile_passes()
        await touch(kube, ns, name, "1")
        await until(lambda: reconcile_passes() > before, what="a pass after the backoff")
        assert len(jobs_of(kube, ns, name)) == 1
    (owed,) = creditjob_status(kube, ns, name)["failedPeriods"]
    assert owed["permanent"] is True
    assert owed.get("nextRetryTime") is None
    assert failed_gauge(ns, name) == 1
    (warning,) = [e for e in events_for(kube, name) if e["reason"] == "PeriodFailed"]
    assert "exit code 2" in warning["message"]
