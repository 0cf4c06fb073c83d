"""The operator against kmock: child Jobs → status and metrics, run-now, catch-up after downtime.

kmock runs no controllers, so the test plays the CronJob controller (creating the Job it would create for a
fire time, with its scheduled-timestamp annotation) and the Job controller / kubelet (writing the Job's
finished status). The operator's clock is pinned (`frozen_clock`) to simulate downtime without waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from operator_kmock_support import (
    CJ_PATH,
    JOBS_PATH,
    MERGE,
    NOW,
    STARTUP,
    condition,
    container_env,
    creditjob,
    creditjob_status,
    events_for,
    finish,
    get,
    jobs_of,
    operator,
    reasons,
    scheduled_job,
    until,
)

from credit_operator import metrics
from credit_operator.cronjob_manifest import manual_job_name


def sample(name: str, metric: str, ns: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(metric, {"creditjob": name, "namespace": ns})


async def test_child_jobs_drive_status_conditions_and_metrics(
    kube: Any, frozen_clock: Callable[[datetime], None]
) -> None:
    # Five minutes after the 1 November fire time: within its starting deadline, so nothing counts as missed.
    frozen_clock(datetime(2026, 11, 1, 0, 5, tzinfo=UTC))
    ns, name = "runs", "monthly"
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob(name, ns, created="2026-10-15T00:00:00Z"))
        cron = await until(lambda: get(kube, "cronjobs", ns, name), what="CronJob")
        # A CreditJob that never succeeded exports last success = 0, so "never succeeded" can alert.
        await until(lambda: sample(name, "creditjobs_creditjob_last_success_timestamp_seconds", ns) == 0, what="0")
        assert (
            sample(name, "creditjobs_creditjob_next_schedule_timestamp_seconds", ns)
            == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
        )
        assert sample(name, "creditjobs_creditjob_schedule_interval_seconds", ns) == 30 * 86400

        # The CronJob controller starts the 1 November run...
        await kube.post(JOBS_PATH.format(ns=ns), json=scheduled_job(cron, "2026-11-01T00:00:00Z", f"{name}-29364480"))
        await until(lambda: creditjob_status(kube, ns, name).get("active") == [f"{name}-29364480"], what="active")
        assert sample(name, "creditjobs_creditjob_active_runs", ns) == 1
        # ...and its pods fail until the backoff limit.
        await finish(kube, ns, f"{name}-29364480", succeeded=False, at="2026-11-01T00:20:00Z")
        await until(lambda: condition(kube, ns, name, "Failing").get("status") == "True", what="Failing")
        status = creditjob_status(kube, ns, name)
        assert status["lastFailedTime"] == "2026-11-01T00:20:00Z"
        assert status["lastScheduleTime"] == "2026-11-01T00:00:00Z"
        assert status["lastPeriodKey"] == "2026-11"
        assert status["active"] == []
        # The metrics are set after the pass (which ends by posting the run's Event): wait for them, not the status.
        await until(lambda: sample(name, "creditjobs_creditjob_active_runs", ns) == 0, what="active runs metric")

        # A manual retry for November succeeds: Failing clears, last success is set.
        retry = scheduled_job(cron, "2026-11-01T00:00:00Z", f"{name}-retry")
        await kube.post(JOBS_PATH.format(ns=ns), json=retry)
        await finish(kube, ns, f"{name}-retry", succeeded=True, at="2026-11-01T01:00:00Z")
        await until(lambda: condition(kube, ns, name, "Failing").get("status") == "False", what="recovered")
        await until(
            lambda: (
                sample(name, "creditjobs_creditjob_last_success_timestamp_seconds", ns)
                == datetime(2026, 11, 1, 1, tzinfo=UTC).timestamp()
            ),
            what="last success metric",
        )
    assert creditjob_status(kube, ns, name)["lastSuccessfulTime"] == "2026-11-01T01:00:00Z"
    info = metrics.REGISTRY.get_sample_value(
        "creditjobs_creditjob_info",
        {
            "creditjob": name,
            "namespace": ns,
            "usecase": "distribute-credits",
            "schedule": "0 0 1 * *",
            "suspended": "false",
        },
    )
    assert info == 1
    assert (metrics.REGISTRY.get_sample_value("creditjobs_operator_reconcile_total", {"result": "ok"}) or 0) > 0


async def test_run_now_creates_exactly_one_job_even_across_resyncs_and_restarts(
    kube: Any, frozen_clock: Callable[[datetime], None]
) -> None:
    frozen_clock(NOW)
    ns, name = "now", "expire"
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob(name, ns, usecase="expire-credits"))
        await until(lambda: get(kube, "cronjobs", ns, name), what="CronJob")
        await kube.patch(
            f"{CJ_PATH.format(ns=ns)}/{name}",
            json={"metadata": {"annotations": {"credits.dev/run-now": "tok-1", "credits.dev/run-period": "2026-10"}}},
            headers=MERGE,
        )
        (job,) = await until(lambda: jobs_of(kube, ns, name), what="run-now Job")
        await until(lambda: creditjob_status(kube, ns, name).get("lastManualRunToken") == "tok-1", what="token")
        await asyncio.sleep(1.5)  # three resync passes
        assert len(jobs_of(kube, ns, name)) == 1
    async with operator():  # restart: resume handler + resync see the same annotation again
        await asyncio.sleep(STARTUP + 1.0)
        assert len(jobs_of(kube, ns, name)) == 1
        # A new token is a new request.
        await kube.patch(
            f"{CJ_PATH.format(ns=ns)}/{name}",
            json={"metadata": {"annotations": {"credits.dev/run-now": "tok-2"}}},
            headers=MERGE,
        )
        await until(lambda: len(jobs_of(kube, ns, name)) == 2, what="second run-now Job")
    assert job["metadata"]["name"] == manual_job_name(name, "tok-1")
    env = container_env(job)
    assert env["CREDITJOB_TRIGGER"] == "manual"
    assert env["CREDITJOB_PERIOD_KEY"] == "2026-10"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    assert reasons(kube, name).count("RunNow") == 2
    assert not job["spec"].get("suspend")


async def test_run_now_with_a_malformed_period_key_is_rejected_once(
    kube: Any, frozen_clock: Callable[[datetime], None]
) -> None:
    frozen_clock(NOW)
    ns, name = "nowbad", "grant"
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob(name, ns))
        await until(lambda: get(kube, "cronjobs", ns, name), what="CronJob")
        await kube.patch(
            f"{CJ_PATH.format(ns=ns)}/{name}",
            json={"metadata": {"annotations": {"credits.dev/run-now": "t", "credits.dev/run-period": "2026-W48"}}},
            headers=MERGE,
        )
        await until(lambda: "RunNowRejected" in reasons(kube, name), what="rejection Event")
        await asyncio.sleep(1.0)
    assert jobs_of(kube, ns, name) == []
    rejected = [e for e in events_for(kube, name) if e["reason"] == "RunNowRejected"]
    assert len(rejected) == 1
    assert rejected[0]["type"] == "Warning"
    assert "malformed monthly period key '2026-W48'" in rejected[0]["message"]


async def test_catch_up_after_downtime_runs_the_missed_periods_in_order_one_at_a_time(
    kube: Any, frozen_clock: Callable[[datetime], None]
) -> None:
    ns, name = "catch", "monthly"
    # Before the downtime: created in May, the CronJob ran the 1 June Job, then everything was down until now.
    frozen_clock(datetime(2026, 6, 1, 0, 5, tzinfo=UTC))
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(
            CJ_PATH.format(ns=ns), json=creditjob(name, ns, created="2026-05-20T00:00:00Z", catchUp={"maxPeriods": 3})
        )
        cron = await until(lambda: get(kube, "cronjobs", ns, name), what="CronJob")
        await kube.post(JOBS_PATH.format(ns=ns), json=scheduled_job(cron, "2026-06-01T00:00:00Z", f"{name}-june"))
        await finish(kube, ns, f"{name}-june", succeeded=True, at="2026-06-01T00:30:00Z")
        await until(lambda: creditjob_status(kube, ns, name).get("lastSuccessfulTime"), what="June success")
    assert [j for j in jobs_of(kube, ns, name) if j["metadata"]["name"] != f"{name}-june"] == []

    frozen_clock(NOW)  # July..November were missed; the cap keeps September, October, November
    async with operator():
        # The pass creates them one after the other: wait for the three (a loaded machine is slow), then a
        # resync more, which must not add any.
        await until(
            lambda: (
                len(
                    [
                        j
                        for j in jobs_of(kube, ns, name)
                        if j["metadata"]["labels"].get("credits.dev/trigger") == "catch-up"
                    ]
                )
                >= 3
            ),
            what="three catch-up Jobs",
        )
        await asyncio.sleep(0.6)
        catch_ups = [
            j for j in jobs_of(kube, ns, name) if j["metadata"]["labels"].get("credits.dev/trigger") == "catch-up"
        ]
        keys = sorted(j["metadata"]["annotations"]["credits.dev/period-key"] for j in catch_ups)
        assert keys == ["2026-09", "2026-10", "2026-11"]

        def running() -> list[str]:
            return sorted(
                j["metadata"]["annotations"]["credits.dev/period-key"]
                for j in jobs_of(kube, ns, name)
                if j["metadata"]["labels"].get("credits.dev/trigger") == "catch-up"
                and not j["spec"].get("suspend")
                and not (j.get("status") or {}).get("conditions")
            )

        order = []
        for finished_at in ("2026-11-28T12:10:00Z", "2026-11-28T12:20:00Z", "2026-11-28T12:30:00Z"):
            (key,) = await until(lambda: running() if len(running()) == 1 else None, what="exactly one running")
            order.append(key)
            job = next(j for j in catch_ups if j["metadata"]["annotations"]["credits.dev/period-key"] == key)
            await finish(kube, ns, job["metadata"]["name"], succeeded=True, at=finished_at)
        await until(lambda: condition(kube, ns, name, "Missed").get("reason") == "PeriodsMissed", what="Missed")
        await asyncio.sleep(1.0)  # resyncs: nothing more is caught up
        assert len(jobs_of(kube, ns, name)) == 4
    assert order == ["2026-09", "2026-10", "2026-11"]
    for job in catch_ups:
        env = container_env(job)
        assert env["CREDITJOB_TRIGGER"] == "catch-up"
        assert env["CREDITJOB_PERIOD_KEY"] == job["metadata"]["annotations"]["credits.dev/period-key"]
    status = creditjob_status(kube, ns, name)
    assert status["missedPeriods"] == ["2026-07", "2026-08"]
    missed_events = [e for e in events_for(kube, name) if e["reason"] == "PeriodsMissed"]
    assert len(missed_events) == 1
    assert "2026-07, 2026-08" in missed_events[0]["message"]
    assert reasons(kube, name).count("CatchUp") == 3
    assert sample(name, "creditjobs_creditjob_missed_periods_total", ns) == 5


async def test_catch_up_under_allow_starts_every_missed_period_at_once(
    kube: Any, frozen_clock: Callable[[datetime], None]
) -> None:
    frozen_clock(NOW)
    ns, name = "allow", "daily"
    body = creditjob(
        name,
        ns,
        created="2026-11-20T12:00:00Z",
        schedule="0 3 * * *",
        period="daily",
        concurrencyPolicy="Allow",
        catchUp={"maxPeriods": 2},
    )
    await kube.post(CJ_PATH.format(ns=ns), json=body)  # created while the operator was down
    async with operator():
        await until(lambda: len(jobs_of(kube, ns, name)) == 2, what="two catch-up Jobs")
        await asyncio.sleep(0.6)
        assert len(jobs_of(kube, ns, name)) == 2
    jobs = jobs_of(kube, ns, name)
    assert sorted(j["metadata"]["annotations"]["credits.dev/period-key"] for j in jobs) == ["2026-11-27", "2026-11-28"]
    assert all(not j["spec"].get("suspend") for j in jobs)
