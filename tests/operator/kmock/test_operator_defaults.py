"""The operator against kmock at production defaults (`CREDITJOBS_RESYNC_SECONDS` unset: 60 s).

The other kmock tests shorten the resync to 0.5 s, which hides anything that only works because the resync
repeats it. Here the resync never fires within a test, so what happens must come from the watch events: run-now
through the real `credit-jobs trigger` command, also on a CreditJob that still carries the
Kopf bookkeeping annotations of an older operator version (`credits.dev/kopf-managed`, …).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import typer
from operator_kmock_support import (
    CJ_PATH,
    STARTUP,
    condition,
    creditjob,
    events_for,
    get,
    jobs_of,
    operator,
    reasons,
    until,
)
from typer.testing import CliRunner

from credit_operator import commands

RUN_NOW_BOUND = 5.0  # "a Job within a few seconds of the annotation"; the default resync is 60 s


@pytest.fixture(autouse=True)
def production_resync(kube: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDITJOBS_RESYNC_SECONDS")  # the default, 60 s


def trigger(name: str, namespace: str) -> str:
    app = typer.Typer()
    commands.register(app)
    result = CliRunner().invoke(app, ["trigger", name, "--namespace", namespace])
    assert result.exit_code == 0, result.output
    return result.output.strip()


async def run_now_seconds(kube: Any, ns: str, name: str) -> float:
    """Trigger a run and return the seconds until its Job exists."""
    started = time.monotonic()
    token = await asyncio.to_thread(trigger, name, ns)
    (job,) = await until(lambda: jobs_of(kube, ns, name), timeout=RUN_NOW_BOUND, what="run-now Job")
    elapsed = time.monotonic() - started
    assert job["metadata"]["annotations"]["credits.dev/run-now-token"] == token
    return elapsed


async def test_run_now_creates_the_job_within_seconds_at_the_default_resync(kube: Any) -> None:
    ns, name = "rn", "grant"
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob(name, ns))
        await until(lambda: get(kube, "cronjobs", ns, name), what="CronJob")
        # Kopf has recorded what it handled (its diff base) before the annotation arrives: a true update.
        await until(
            lambda: any(
                k.endswith("/last-handled-configuration")
                for k in ((get(kube, "creditjobs", ns, name) or {})["metadata"].get("annotations") or {})
            ),
            what="Kopf's diff base",
        )
        elapsed = await run_now_seconds(kube, ns, name)
    print(f"run-now → Job in {elapsed:.2f} s at the default resync")


LEGACY = {
    "credits.dev/kopf-managed": "yes",
    "credits.dev/creditjob_changed": json.dumps({"started": "2026-11-01T00:00:00.000000+00:00", "success": True}),
}


async def test_a_creditjob_marked_by_the_old_kopf_prefix_is_migrated_and_run_now_still_works(kube: Any) -> None:
    ns, name = "rnold", "grant"
    body = creditjob(name, ns)
    essence = {"spec": body["spec"]}
    body["metadata"]["annotations"] = {
        **LEGACY,
        "credits.dev/last-handled-configuration": json.dumps(essence) + "\n",
    }
    await kube.post(CJ_PATH.format(ns=ns), json=body)
    async with operator():
        await until(lambda: get(kube, "cronjobs", ns, name), what="CronJob")
        await until(
            lambda: (
                not any(
                    k in ((get(kube, "creditjobs", ns, name) or {})["metadata"].get("annotations") or {})
                    for k in [*LEGACY, "credits.dev/last-handled-configuration"]
                )
            ),
            what="the old Kopf annotations removed",
        )
        await asyncio.sleep(STARTUP)  # the echo of the migration patch is handled
        elapsed = await run_now_seconds(kube, ns, name)
    annotations = (get(kube, "creditjobs", ns, name) or {})["metadata"]["annotations"]
    assert not any(k.startswith("credits.dev/") and "kopf" in k for k in annotations)
    print(f"run-now on a migrated CreditJob → Job in {elapsed:.2f} s at the default resync")


async def test_kopf_keeps_its_bookkeeping_under_its_own_prefix(kube: Any) -> None:
    ns, name = "rnkeys", "grant"
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob(name, ns))
        await until(
            lambda: (
                "kopf.credits.dev/last-handled-configuration"
                in ((get(kube, "creditjobs", ns, name) or {})["metadata"].get("annotations") or {})
            ),
            what="Kopf's diff base",
        )
    annotations = (get(kube, "creditjobs", ns, name) or {})["metadata"]["annotations"]
    assert not [k for k in annotations if k.startswith("credits.dev/")], annotations  # nothing of Kopf's there


async def test_several_wrong_types_are_all_reported_in_status_and_events(kube: Any) -> None:
    ns, name = "types", "grant"
    body = creditjob(name, ns, backoffLimit="3", suspend="yes", parallelism=True)
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns=ns), json=body)
        ready = await until(lambda: condition(kube, ns, name, "Ready"), what="Ready condition")
        await until(lambda: "InvalidSpec" in reasons(kube, name), what="the InvalidSpec Event")
    assert ready["status"] == "False"
    (event,) = [e for e in events_for(kube, name) if e["reason"] == "InvalidSpec"]
    for field in ("spec.suspend", "spec.backoffLimit", "spec.parallelism"):
        assert field in ready["message"]
        assert field in event["message"]
    assert get(kube, "cronjobs", ns, name) is None


async def test_an_overlong_run_now_token_is_rejected_and_not_copied(kube: Any) -> None:
    ns, name = "longtok", "grant"
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob(name, ns))
        await until(lambda: get(kube, "cronjobs", ns, name), what="CronJob")
        token = "x" * 10_000
        await kube.patch(
            f"{CJ_PATH.format(ns=ns)}/{name}",
            json={"metadata": {"annotations": {"credits.dev/run-now": token}}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        await until(lambda: "RunNowRejected" in reasons(kube, name), timeout=RUN_NOW_BOUND, what="RunNowRejected")
    assert jobs_of(kube, ns, name) == []
    (event,) = [e for e in events_for(kube, name) if e["reason"] == "RunNowRejected"]
    assert "longer than 63 characters" in event["message"]
    assert len(event["message"]) < 300
    status = (get(kube, "creditjobs", ns, name) or {}).get("status") or {}
    assert len(str(status.get("lastManualRunToken", ""))) <= 63  # not copied into status


async def test_specs_the_cronjob_api_refuses_are_reported_invalid_not_retried(kube: Any) -> None:
    ns = "refused"
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob("zone", ns, timeZone="Asia"))
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob("last", ns))
        await until(lambda: condition(kube, ns, "last", "Ready").get("status") == "True", what="last Ready")
        # An existing CreditJob edited to a schedule the API server would refuse: no stale Ready=True.
        await kube.patch(
            f"{CJ_PATH.format(ns=ns)}/last",
            json={"spec": {"schedule": "0 0 L * *"}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        for name in ("zone", "last"):
            await until(lambda n=name: "InvalidSpec" in reasons(kube, n), what=f"InvalidSpec for {name}")
            await until(lambda n=name: condition(kube, ns, n, "Ready").get("status") == "False", what=f"{name}")
    assert "unknown time zone 'Asia'" in condition(kube, ns, "zone", "Ready")["message"]
    assert "'L' is not accepted by Kubernetes CronJobs" in condition(kube, ns, "last", "Ready")["message"]
    assert get(kube, "cronjobs", ns, "zone") is None
    assert (get(kube, "cronjobs", ns, "last") or {})["spec"]["schedule"] == "0 0 1 * *"  # last good one kept


async def test_resources_of_a_shape_a_pod_cannot_take_are_reported_invalid(kube: Any) -> None:
    # (the CRD's schema refuses these in a real cluster; an operator must not depend on that: kmock does not check it)
    ns = "resources"
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob("lots", ns, resources={"requests": "lots"}))
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob("list", ns, resources={"limits": {"memory": ["1"]}}))
        for name in ("lots", "list"):
            await until(lambda n=name: "InvalidSpec" in reasons(kube, n), what=f"InvalidSpec for {name}")
            await until(lambda n=name: condition(kube, ns, n, "Ready").get("status") == "False", what=name)
    assert "spec.resources.requests has the wrong type" in condition(kube, ns, "lots", "Ready")["message"]
    assert "spec.resources.limits.memory must be a quantity" in condition(kube, ns, "list", "Ready")["message"]
    assert get(kube, "cronjobs", ns, "lots") is None
    assert get(kube, "cronjobs", ns, "list") is None


async def test_an_image_or_database_secret_nobody_allowed_never_reaches_a_cronjob(kube: Any) -> None:
    """Whoever may patch a CreditJob (the API's ServiceAccount needs to, for run-now) cannot make it run another
    image or hand a runner another Secret of the namespace: the spec is refused, the CronJob left as it was."""
    ns = "policy"
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob("miner", ns, image="attacker.example/miner:latest"))
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob("steal", ns, databaseSecretRef={"name": "payments"}))
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob("honest", ns))
        for name in ("miner", "steal"):
            await until(lambda n=name: condition(kube, ns, n, "Ready").get("status") == "False", what=name)
        honest = await until(lambda: get(kube, "cronjobs", ns, "honest"), what="the honest CronJob")
        image = honest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"]
        await kube.patch(
            CJ_PATH.format(ns=ns) + "/honest",
            json={"spec": {"image": "attacker.example/miner:latest"}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        await until(lambda: condition(kube, ns, "honest", "Ready").get("status") == "False", what="honest refused")
    assert (
        "spec.image 'attacker.example/miner:latest' is not an image this operator runs"
        in (condition(kube, ns, "miner", "Ready")["message"])
    )
    assert (
        "spec.databaseSecretRef.name 'payments' is not a database Secret"
        in (condition(kube, ns, "steal", "Ready")["message"])
    )
    assert get(kube, "cronjobs", ns, "miner") is None
    assert get(kube, "cronjobs", ns, "steal") is None
    kept = get(kube, "cronjobs", ns, "honest")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert kept["image"] == image  # the last good spec keeps running
    assert "InvalidSpec" in reasons(kube, "honest")
