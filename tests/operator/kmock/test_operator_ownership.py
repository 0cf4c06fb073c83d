"""Ownership of the CronJob, with the real operator process on kmock at the default resync.

Ownership is the owner reference's uid, not the `credits.dev/creditjob` label: a removed label is put back (no
CronJobConflict), a removed owner reference is restored (or deleting the CreditJob would leave a CronJob that
keeps billing), a hand-added nodeSelector is reverted, and a same-named CronJob owned by another uid stays a
reported conflict. The resync (60 s) never fires here: every repair comes from the CronJob's watch events.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from operator_kmock_support import (
    CJ_PATH,
    CRONJOBS_PATH,
    MERGE,
    condition,
    creditjob,
    get,
    reasons,
    until,
)
from test_operator_requests import operator_process

LABEL = "credits.dev/creditjob"


def owner_uids(kube: Any, ns: str, name: str) -> list[str]:
    cron = get(kube, "cronjobs", ns, name) or {}
    return [r.get("uid") for r in cron.get("metadata", {}).get("ownerReferences") or []]


def pod_spec(kube: Any, ns: str, name: str) -> dict[str, Any]:
    cron = get(kube, "cronjobs", ns, name) or {}
    return dict(cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]) if cron else {}


async def edit_cronjob(kube: Any, ns: str, name: str, patch: dict[str, Any]) -> None:
    await kube.patch(f"{CRONJOBS_PATH.format(ns=ns)}/{name}", json=patch, headers=MERGE)


async def test_label_owner_reference_and_added_fields_are_repaired_as_drift(kube: Any, tmp_path: Path) -> None:
    ns = "owned"
    names = ("nolabel", "noowner", "nodesel")
    async with operator_process(kube, tmp_path / "operator.log", None):
        for name in names:
            await kube.post(CJ_PATH.format(ns=ns), json=creditjob(name, ns))
        for name in names:
            await until(lambda n=name: condition(kube, ns, n, "Ready").get("status") == "True", what=f"{name} Ready")
        uids = {n: (get(kube, "creditjobs", ns, n) or {})["metadata"]["uid"] for n in names}

        await edit_cronjob(kube, ns, "nolabel", {"metadata": {"labels": {LABEL: None}}})
        await edit_cronjob(kube, ns, "noowner", {"metadata": {"ownerReferences": None}})
        await edit_cronjob(kube, ns, "nodesel", {"spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "nodeSelector": {"disk": "ssd"}}}}}}})  # fmt: skip

        await until(
            lambda: (
                ((get(kube, "cronjobs", ns, "nolabel") or {})["metadata"].get("labels") or {}).get(LABEL) == "nolabel"
            ),
            what="the label put back",
        )
        await until(lambda: owner_uids(kube, ns, "noowner") == [uids["noowner"]], what="the owner reference back")
        await until(lambda: "nodeSelector" not in pod_spec(kube, ns, "nodesel"), what="the nodeSelector reverted")
        for name in names:
            await until(lambda n=name: "DriftReverted" in reasons(kube, n), what=f"DriftReverted for {name}")
    for name in names:
        assert "CronJobConflict" not in reasons(kube, name)
        assert condition(kube, ns, name, "Ready")["status"] == "True"
        assert owner_uids(kube, ns, name) == [uids[name]]


async def test_a_cronjob_owned_by_another_uid_stays_a_reported_conflict(kube: Any, tmp_path: Path) -> None:
    ns, name = "taken", "grant"
    other = {"apiVersion": "credits.dev/v1alpha1", "kind": "CreditJob", "name": name, "uid": "uid-of-another"}
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {LABEL: name},  # our label, someone else's owner: the uid decides
            "ownerReferences": [{**other, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {"schedule": "5 5 * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
    }
    await kube.post(CRONJOBS_PATH.format(ns=ns), json=foreign)
    async with operator_process(kube, tmp_path / "operator.log", None):
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob(name, ns))
        ready = await until(lambda: condition(kube, ns, name, "Ready"), what="a Ready condition")
        await until(lambda: "CronJobConflict" in reasons(kube, name), what="the CronJobConflict Event")
    assert ready["status"] == "False"
    assert "not managed by this CreditJob" in ready["message"]
    cron = get(kube, "cronjobs", ns, name) or {}
    assert cron["spec"]["schedule"] == "5 5 * * *"  # never taken over
    assert owner_uids(kube, ns, name) == ["uid-of-another"]
