"""The operator against kmock: CreditJob → CronJob, updates, drift, suspend, invalid specs, restarts.

kmock is only the API server; the operator under test is the real one (Kopf + credit_operator.handlers) in a
KopfRunner thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from operator_kmock_support import (
    CJ_PATH,
    CRONJOBS_PATH,
    STARTUP,
    condition,
    container_env,
    creditjob,
    creditjob_status,
    events_for,
    get,
    live,
    operator,
    reasons,
    until,
)


async def patch_creditjob(kube: Any, ns: str, name: str, spec: dict[str, Any]) -> None:
    await kube.patch(
        f"{CJ_PATH.format(ns=ns)}/{name}", json={"spec": spec}, headers={"Content-Type": "application/merge-patch+json"}
    )


async def test_a_creditjob_gets_an_owned_cronjob_running_the_jobs_image(kube: Any) -> None:
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns="life"), json=creditjob("grant", "life", params={"batchSize": 500}))
        cron = await until(lambda: get(kube, "cronjobs", "life", "grant"), what="CronJob created")
        await until(lambda: condition(kube, "life", "grant", "Ready").get("status") == "True", what="Ready")
        await until(lambda: "CronJobCreated" in reasons(kube, "grant"), what="Event")
    owner = get(kube, "creditjobs", "life", "grant")
    assert owner is not None
    (ref,) = cron["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
        "CreditJob",
        "grant",
        owner["metadata"]["uid"],
        True,
    )
    (c,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["credit-jobs", "run", "distribute-credits"]
    assert c["args"] == ["--batch-size", "500"]
    assert c["image"] == "registry.test/credit-jobs:1.2.3"  # CREDITJOBS_DEFAULT_IMAGE
    env = container_env(cron)
    assert env["CREDITJOB_NAME"] == "grant"
    assert env["CREDITJOB_TRIGGER"] == "schedule"
    assert env["PUSHGATEWAY_URL"] == "http://pushgateway.test:9091"
    assert cron["spec"]["schedule"] == "0 0 1 * *"
    status = creditjob_status(kube, "life", "grant")
    assert status["cronJobName"] == "grant"
    assert status["nextScheduleTime"]
    # no finalizer: deleting the CreditJob never waits for the operator
    assert not owner["metadata"].get("finalizers")


async def test_a_schedule_update_patches_the_cronjob(kube: Any) -> None:
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns="upd"), json=creditjob("upd", "upd"))
        await until(lambda: get(kube, "cronjobs", "upd", "upd"), what="CronJob created")
        await patch_creditjob(kube, "upd", "upd", {"schedule": "0 6 1 * *", "timeZone": "Asia/Shanghai"})
        cron = await until(
            lambda: (c := get(kube, "cronjobs", "upd", "upd")) and c["spec"]["schedule"] == "0 6 1 * *" and c,
            what="CronJob patched",
        )
        await until(lambda: "CronJobUpdated" in reasons(kube, "upd"), what="Event")
    assert cron["spec"]["timeZone"] == "Asia/Shanghai"
    assert container_env(cron)["CREDITJOB_TIME_ZONE"] == "Asia/Shanghai"
    assert len(live(kube, "cronjobs", "upd")) == 1


async def test_a_hand_edited_cronjob_is_reverted(kube: Any) -> None:
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns="drift"), json=creditjob("drift", "drift"))
        await until(lambda: get(kube, "cronjobs", "drift", "drift"), what="CronJob created")
        await until(lambda: "CronJobCreated" in reasons(kube, "drift"), what="created Event")
        await kube.patch(
            f"{CRONJOBS_PATH.format(ns='drift')}/drift",
            json={"spec": {"schedule": "* * * * *", "suspend": True}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        await until(lambda: "DriftReverted" in reasons(kube, "drift"), what="DriftReverted Event")
        cron = await until(
            lambda: (c := get(kube, "cronjobs", "drift", "drift")) and c["spec"]["schedule"] == "0 0 1 * *" and c,
            what="CronJob reverted",
        )
    assert cron["spec"]["suspend"] is False
    drift_event = next(e for e in events_for(kube, "drift") if e["reason"] == "DriftReverted")
    assert "schedule" in drift_event["message"]
    assert "suspend" in drift_event["message"]


async def test_suspend_suspends_the_cronjob_with_the_reason(kube: Any) -> None:
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns="susp"), json=creditjob("susp", "susp"))
        await until(lambda: get(kube, "cronjobs", "susp", "susp"), what="CronJob created")
        await patch_creditjob(kube, "susp", "susp", {"suspend": True, "suspendReason": "ledger migration"})
        await until(lambda: (get(kube, "cronjobs", "susp", "susp") or {})["spec"]["suspend"] is True, what="suspended")
        suspended = await until(
            lambda: (c := condition(kube, "susp", "susp", "Suspended")).get("status") == "True" and c,
            what="Suspended condition",
        )
        await until(lambda: "Suspended" in reasons(kube, "susp"), what="Suspended Event")
        await patch_creditjob(kube, "susp", "susp", {"suspend": False, "suspendReason": ""})
        await until(lambda: (get(kube, "cronjobs", "susp", "susp") or {})["spec"]["suspend"] is False, what="resumed")
        await until(lambda: "Resumed" in reasons(kube, "susp"), what="Resumed Event")
    assert suspended["message"] == "ledger migration"
    assert (
        "nextScheduleTime" not in creditjob_status(kube, "susp", "susp")
        or creditjob_status(kube, "susp", "susp")["nextScheduleTime"]
    )


async def test_an_invalid_spec_is_reported_and_the_cronjob_left_alone(kube: Any) -> None:
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns="bad"), json=creditjob("bad", "bad"))
        before = await until(lambda: get(kube, "cronjobs", "bad", "bad"), what="CronJob created")
        await until(lambda: condition(kube, "bad", "bad", "Ready").get("status") == "True", what="Ready")
        # Passes the schema, but no such zone exists (the schema cannot know the IANA database).
        await patch_creditjob(kube, "bad", "bad", {"timeZone": "Mars/Olympus", "schedule": "0 5 1 * *"})
        ready = await until(
            lambda: (c := condition(kube, "bad", "bad", "Ready")).get("status") == "False" and c,
            what="Ready=False",
        )
        await until(lambda: "InvalidSpec" in reasons(kube, "bad"), what="Warning Event")
        await asyncio.sleep(1.2)  # two resyncs: still no change
    assert ready["reason"] == "InvalidSpec"
    assert "unknown time zone 'Mars/Olympus'" in ready["message"]
    warning = next(e for e in events_for(kube, "bad") if e["reason"] == "InvalidSpec")
    assert warning["type"] == "Warning"
    after = get(kube, "cronjobs", "bad", "bad")
    assert after is not None
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    # one Warning per distinct problem, not one per resync
    assert reasons(kube, "bad").count("InvalidSpec") == 1


async def test_an_operator_restart_converges_what_changed_while_it_was_down(kube: Any) -> None:
    async with operator():
        await asyncio.sleep(STARTUP)
        await kube.post(CJ_PATH.format(ns="rst"), json=creditjob("one", "rst"))
        await until(lambda: get(kube, "cronjobs", "rst", "one"), what="CronJob created")
    # While the operator is down: a new CreditJob appears and the existing CronJob is edited by hand.
    await kube.post(CJ_PATH.format(ns="rst"), json=creditjob("two", "rst", schedule="@daily", period="daily"))
    await kube.patch(
        f"{CRONJOBS_PATH.format(ns='rst')}/one",
        json={"spec": {"schedule": "5 5 5 5 *"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    async with operator():
        await until(lambda: get(kube, "cronjobs", "rst", "two"), what="missing CronJob created on resume")
        await until(
            lambda: (get(kube, "cronjobs", "rst", "one") or {})["spec"]["schedule"] == "0 0 1 * *",
            what="drift reverted on resume",
        )
        await until(lambda: condition(kube, "rst", "two", "Ready").get("status") == "True", what="Ready")
    assert len(live(kube, "cronjobs", "rst")) == 2
