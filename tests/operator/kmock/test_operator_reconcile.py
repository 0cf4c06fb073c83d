"""Single reconcile passes (no Kopf) against kmock: the decisions of the numbered steps that the operator-level
tests do not reach — a foreign CronJob, run-now on an invalid spec, catch-up while suspended."""

from __future__ import annotations

import asyncio
from typing import Any

from operator_kmock_support import (
    CJ_PATH,
    CRONJOBS_PATH,
    NOW,
    creditjob,
    get,
    jobs_of,
)

from credit_operator.cronjob_manifest import ManifestDefaults
from credit_operator.kube import KubeApi, connect
from credit_operator.reconcile import Outcome, reconcile

WIDE = "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in "2026-11")  # full-width digits


async def one_pass(ns: str, name: str) -> Outcome:
    api = KubeApi(await asyncio.to_thread(connect))
    body = await asyncio.to_thread(api.get_creditjob, ns, name)
    return await asyncio.to_thread(
        lambda: reconcile(api, body, now=NOW, defaults=ManifestDefaults(image="i"), emit=lambda *_: None)
    )


def reasons(outcome: Outcome) -> list[tuple[str, str]]:
    return [(kind, reason) for kind, reason, _ in outcome.decisions]


async def test_a_foreign_cronjob_with_the_same_name_is_never_taken_over(kube: Any) -> None:
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "grant", "namespace": "own", "labels": {"team": "other"}},
        "spec": {"schedule": "5 5 * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
    }
    await kube.post(CRONJOBS_PATH.format(ns="own"), json=foreign)
    await kube.post(CJ_PATH.format(ns="own"), json=creditjob("grant", "own"))
    outcome = await one_pass("own", "grant")
    assert outcome.result == "invalid"
    assert ("Warning", "CronJobConflict") in reasons(outcome)
    ready = next(c for c in outcome.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert "not managed by this CreditJob" in ready["message"]
    assert (get(kube, "cronjobs", "own", "grant") or {})["spec"]["schedule"] == "5 5 * * *"
    again = await one_pass("own", "grant")  # a resync: same problem, no second Warning
    assert again.result == "invalid"
    assert again.decisions == []


async def test_run_now_on_an_invalid_spec_is_rejected_and_remembered(kube: Any) -> None:
    body = creditjob("bad", "rn", timeZone="Nowhere/Land")
    body["metadata"]["annotations"] = {"credits.dev/run-now": "t1"}
    await kube.post(CJ_PATH.format(ns="rn"), json=body)
    outcome = await one_pass("rn", "bad")
    assert ("Warning", "InvalidSpec") in reasons(outcome)
    assert ("Warning", "RunNowRejected") in reasons(outcome)
    assert outcome.status["lastManualRunToken"] == "t1"
    assert get(kube, "cronjobs", "rn", "bad") is None  # first created invalid: no CronJob at all
    assert jobs_of(kube, "rn", "bad") == []


async def test_nothing_is_caught_up_while_suspended_and_resuming_does_not_replay_it(kube: Any) -> None:
    await kube.post(
        CJ_PATH.format(ns="sus"),
        json=creditjob("grant", "sus", created="2026-06-15T00:00:00Z", suspend=True, suspendReason="audit"),
    )
    outcome = await one_pass("sus", "grant")
    assert outcome.result == "ok"
    assert jobs_of(kube, "sus", "grant") == []
    assert outcome.status["catchUpThrough"] == "2026-11-28T12:00:00Z"
    assert outcome.status["nextScheduleTime"] is None
    await kube.patch(
        f"{CJ_PATH.format(ns='sus')}/grant",
        json={"spec": {"suspend": False}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    resumed = await one_pass("sus", "grant")
    assert ("Normal", "Resumed") in reasons(resumed)
    assert jobs_of(kube, "sus", "grant") == []  # July..November were skipped on purpose


async def test_replace_queues_catch_up_like_forbid(kube: Any) -> None:
    await kube.post(
        CJ_PATH.format(ns="rep"),
        json=creditjob("grant", "rep", created="2026-08-15T00:00:00Z", concurrencyPolicy="Replace"),
    )
    outcome = await one_pass("rep", "grant")
    jobs = sorted(jobs_of(kube, "rep", "grant"), key=lambda j: j["metadata"]["annotations"]["credits.dev/period-key"])
    assert [j["metadata"]["annotations"]["credits.dev/period-key"] for j in jobs] == ["2026-09", "2026-10", "2026-11"]
    assert [bool(j["spec"].get("suspend")) for j in jobs] == [False, True, True]  # the oldest released at once
    assert [r for _, r in reasons(outcome)].count("CatchUp") == 3
    assert ("Normal", "CatchUpStarted") in reasons(outcome)
    assert outcome.status["queued"] == sorted(j["metadata"]["name"] for j in jobs[1:])


async def test_run_now_with_a_non_canonical_period_key_is_rejected_like_any_bad_run_now_input(kube: Any) -> None:
    # Full-width digits spell 2026-11 to a human and to Python's int(); only the canonical ASCII key may run.
    body = creditjob("wide", "rnk")
    body["metadata"]["annotations"] = {"credits.dev/run-now": "t1", "credits.dev/run-period": WIDE}
    await kube.post(CJ_PATH.format(ns="rnk"), json=body)
    outcome = await one_pass("rnk", "wide")
    assert outcome.result == "ok"  # the spec is fine; only the request is refused
    rejected = [message for kind, reason, message in outcome.decisions if reason == "RunNowRejected"]
    assert len(rejected) == 1
    assert f"malformed monthly period key '{WIDE}'" in rejected[0]
    assert outcome.status["lastManualRunToken"] == "t1"  # recorded: not retried on every pass
    assert jobs_of(kube, "rnk", "wide") == []
