"""The CronJob drift and ownership planners: every rendered field is drift when changed or
added (a nodeSelector by hand), the label and the owner reference included; ownership follows the uid."""

from __future__ import annotations

import copy
import json
from typing import Any

import kopf

from credit_operator.creditjob import parse_creditjob
from credit_operator.cronjob_manifest import (
    ManifestDefaults,
    build_cronjob,
    cronjob_drift,
    cronjob_patch,
    ownership,
)

UID = "uid-of-grant"
BODY = {
    "apiVersion": "credits.dev/v1alpha1",
    "kind": "CreditJob",
    "metadata": {"name": "grant", "namespace": "billing", "uid": UID},
    "spec": {"usecase": "distribute-credits", "schedule": "0 0 1 * *"},
}
CREDITJOB = parse_creditjob(BODY)


def desired() -> dict[str, Any]:
    cron = build_cronjob(CREDITJOB, ManifestDefaults(image="i"))
    kopf.adopt(cron, owner=copy.deepcopy(BODY))  # type: ignore[arg-type]
    return cron


def live_with_server_defaults() -> dict[str, Any]:
    live = json.loads(json.dumps(desired()))  # as the API server returns it: no dict shared by two places
    live["spec"]["jobTemplate"]["spec"]["completionMode"] = "NonIndexed"
    pod = live["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod.update(dnsPolicy="ClusterFirst", schedulerName="default-scheduler", terminationGracePeriodSeconds=30)
    pod["containers"][0]["terminationMessagePath"] = "/dev/termination-log"
    return live


def test_server_defaults_are_not_drift() -> None:
    assert cronjob_drift(desired(), live_with_server_defaults()) == []


def test_an_added_node_selector_is_drift_and_the_patch_removes_it() -> None:
    live = live_with_server_defaults()
    live["spec"]["jobTemplate"]["spec"]["template"]["spec"]["nodeSelector"] = {"disk": "ssd"}
    live["spec"]["jobTemplate"]["spec"]["ttlSecondsAfterFinished"] = 10
    assert sorted(cronjob_drift(desired(), live)) == [
        "jobTemplate.spec.template.spec.nodeSelector",
        "jobTemplate.spec.ttlSecondsAfterFinished",
    ]
    patch = cronjob_patch(desired(), live)
    assert patch["spec"]["jobTemplate"]["spec"]["template"]["spec"]["nodeSelector"] is None  # merge patch: delete
    assert patch["spec"]["jobTemplate"]["spec"]["ttlSecondsAfterFinished"] is None
    assert "dnsPolicy" not in patch["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # defaults left alone


def test_a_removed_label_or_owner_reference_is_drift_and_put_back() -> None:
    live = live_with_server_defaults()
    del live["metadata"]["labels"]["credits.dev/creditjob"]
    live["metadata"]["ownerReferences"] = []
    assert cronjob_drift(desired(), live) == ["metadata.labels.credits.dev/creditjob", "metadata.ownerReferences"]
    patch = cronjob_patch(desired(), live)
    assert patch["metadata"]["labels"]["credits.dev/creditjob"] == "grant"
    assert [r["uid"] for r in patch["metadata"]["ownerReferences"]] == [UID]


def test_ownership_is_the_uid_not_the_label() -> None:
    owned = desired()
    del owned["metadata"]["labels"]["credits.dev/creditjob"]
    assert ownership(owned, CREDITJOB) == "owned"
    orphan = desired()
    orphan["metadata"]["ownerReferences"] = []
    assert ownership(orphan, CREDITJOB) == "orphan"  # our label, nobody's: adopted again
    taken = desired()
    taken["metadata"]["ownerReferences"] = [{"uid": "another", "controller": True, "kind": "CreditJob"}]
    assert ownership(taken, CREDITJOB) == "foreign"
    unlabelled = desired()
    unlabelled["metadata"] = {"name": "grant", "labels": {"team": "x"}}
    assert ownership(unlabelled, CREDITJOB) == "foreign"
