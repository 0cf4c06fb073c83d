"""A catch-up pass that dies between any two of its writes leaves, after the next pass, the state a pass that never
died leaves: the same catch-up Jobs, the same given-up `missedPeriods`, the same owed periods.

Seen: a pass posted PeriodsMissed, created its catch-up Jobs and died before its status write; the next leader
planned from the newest catch-up Job, so the periods given up beyond `catchUp.maxPeriods` were forgotten (11 of 30
CreditJobs lost theirs). Now the given-up periods travel on the catch-up Jobs themselves
(`credits.dev/given-up-periods`), so they are derivable after any crash.

Real API state (kmock), real `reconcile()` passes in process at the pinned clock. The crash is the one thing
simulated: the client stops sending after its Nth write, as a SIGKILL between two requests would stop it — for
every N from 0 to the number of writes a whole pass makes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from operator_kmock_support import CJ_PATH, NOW, creditjob, creditjob_status, jobs_of

from credit_operator import metrics
from credit_operator.cronjob_manifest import ManifestDefaults
from credit_operator.kube import KubeApi, connect
from credit_operator.reconcile import reconcile

DEFAULTS = ManifestDefaults(image="registry.test/credit-jobs:1.2.3")


class Crashed(Exception):
    """The process died here (nothing after this request reaches the API)."""


class DyingApi(KubeApi):
    """A KubeApi that sends `writes` mutating requests, then dies (`writes=None`: never); counts what it sent."""

    def __init__(self, client: Any, writes: int | None) -> None:
        super().__init__(client)
        self.left, self.sent = writes, 0

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
        if method != "GET":
            if self.left is not None and self.sent >= self.left:
                raise Crashed(f"{method} {path}")
            self.sent += 1
        return super().request(method, path, body, **kwargs)


def _pass(api: KubeApi, ns: str, name: str) -> Any:
    return reconcile(api, api.get_creditjob(ns, name), now=NOW, defaults=DEFAULTS, emit=lambda *_: None)


def _state(kube: Any, ns: str, name: str) -> dict[str, Any]:
    status = creditjob_status(kube, ns, name)
    keys = sorted(j["metadata"]["annotations"]["credits.dev/period-key"] for j in jobs_of(kube, ns, name))
    return {
        "jobs": keys,
        "missedPeriods": status.get("missedPeriods"),
        "failedPeriods": status.get("failedPeriods"),
        "catchUpThrough": status.get("catchUpThrough"),
        "Missed": next((c["reason"] for c in status.get("conditions") or [] if c["type"] == "Missed"), None),
    }


async def test_a_crash_between_any_two_writes_of_a_catch_up_pass_loses_no_decision(kube: Any) -> None:
    client = await asyncio.to_thread(connect)
    name = "daily"
    # Created ten days before the operator's clock, never run: ten missed days, three caught up, seven given up.
    spec = {"schedule": "0 3 * * *", "period": "daily", "catchUp": {"maxPeriods": 3}}

    async def fresh(ns: str) -> None:
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob(name, ns, created="2026-11-18T12:00:00Z", **spec))

    await fresh("whole")
    whole = DyingApi(client, None)
    outcome = await asyncio.to_thread(_pass, whole, "whole", name)
    expected = _state(kube, "whole", name)
    assert len(expected["jobs"]) == 3
    assert len(expected["missedPeriods"]) == 7
    assert set(expected["missedPeriods"]) <= set(outcome.missed_keys)
    writes = whole.sent

    for died_after in range(writes):
        ns = f"crash-{died_after}"
        await fresh(ns)
        dying = DyingApi(client, died_after)
        try:
            await asyncio.to_thread(_pass, dying, ns, name)
        except Crashed:
            pass
        else:
            raise AssertionError(f"the pass made fewer than {died_after + 1} writes")
        recorded = creditjob_status(kube, ns, name).get("missedPeriods")
        # the next leader: a new process (nothing counted yet), a fresh client, one pass
        metrics.forget_creditjob(name, ns)
        after = await asyncio.to_thread(_pass, DyingApi(client, None), ns, name)
        assert _state(kube, ns, name) == expected, f"died after write {died_after} of {writes}"
        if not recorded:  # the dead pass never wrote them down: the next one counts them (missed_periods_total)
            assert set(expected["missedPeriods"]) <= set(after.missed_keys), died_after


async def test_a_run_now_job_created_just_before_a_crash_still_gets_its_run_now_event(kube: Any) -> None:
    """Seen: 3 of 30 run-now Jobs created just before a SIGKILL never got a RunNow Event — the next pass found the
    Job's name taken (409) and took that for "already reported". The token is not in status yet, so the request
    was not finished: the next pass reports the Job it finds."""
    client = await asyncio.to_thread(connect)
    ns, name = "run-now-crash", "grant"
    await kube.post(CJ_PATH.format(ns=ns), json=creditjob(name, ns, created="2026-11-27T12:00:00Z"))
    await asyncio.to_thread(_pass, DyingApi(client, None), ns, name)  # the CronJob, nothing owed
    await kube.patch(
        f"{CJ_PATH.format(ns=ns)}/{name}",
        json={"metadata": {"annotations": {"credits.dev/run-now": "tok-1"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    # As in production, the pass posts its Events through the same client: the crash lands after the Job's create.
    with pytest.raises(Crashed, match="/events"):
        await asyncio.to_thread(_reporting_pass, DyingApi(client, 1), ns, name, [])
    assert len(jobs_of(kube, ns, name)) == 1
    assert not creditjob_status(kube, ns, name).get("lastManualRunToken")

    reported: list[tuple[str, str, str]] = []
    await asyncio.to_thread(_reporting_pass, DyingApi(client, None), ns, name, reported)
    (job,) = jobs_of(kube, ns, name)
    assert [r for _, r, _ in reported] == ["RunNow"], reported
    assert job["metadata"]["name"] in reported[0][2], reported
    assert "tok-1" in reported[0][2], reported
    assert creditjob_status(kube, ns, name).get("lastManualRunToken") == "tok-1"
    reported.clear()
    await asyncio.to_thread(_reporting_pass, DyingApi(client, None), ns, name, reported)
    assert reported == [], "a recorded token is never reported again"


def _reporting_pass(api: KubeApi, ns: str, name: str, reported: list[tuple[str, str, str]]) -> Any:
    body = api.get_creditjob(ns, name)

    def emit(kind: str, reason: str, message: str) -> None:
        reported.append((kind, reason, message))
        api.post_event(body, kind, reason, message, "2026-12-01T12:00:00Z")

    return reconcile(api, body, now=NOW, defaults=DEFAULTS, emit=emit)
