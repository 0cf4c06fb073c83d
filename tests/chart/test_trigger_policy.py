"""Triggering a run and changing what runs are separate permissions: the chart's
ValidatingAdmissionPolicy, its CEL evaluated offline with cel-python the way kube-apiserver evaluates it —
matchConditions, then variables, then validations — on real before/after CreditJobs.

Seen: whoever could patch a CreditJob (the API's ServiceAccount needs patch for run-now) could set `spec.image` and
`spec.databaseSecretRef` and so run any image with any Secret. Now the API's ServiceAccount and the trigger groups
may set the run-now annotations and nothing else; everyone else is left to RBAC (the operator, people who edit).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

import celpy
import kubernetes_validate
import pytest
from chart_support import KUBE_VERSIONS, NAMESPACE, of_kind, only

from credit_operator.creditjob import ANNOTATION_REQUESTED_BY, ANNOTATION_RUN_NOW, ANNOTATION_RUN_PERIOD

VALUES = {"api": {"enabled": True, "credentialsSecret": "api-creds"}, "rbac": {"triggerGroups": ["billing-oncall"]}}
API_SA = f"system:serviceaccount:{NAMESPACE}:credit-jobs-api"
_env = celpy.Environment()

BEFORE: dict[str, Any] = {
    "apiVersion": "credits.dev/v1alpha1",
    "kind": "CreditJob",
    "metadata": {
        "name": "monthly",
        "namespace": "billing",
        "labels": {"team": "billing"},
        "annotations": {"owner": "billing-team", ANNOTATION_RUN_PERIOD: "2026-10"},
    },
    "spec": {"usecase": "distribute-credits", "schedule": "0 0 1 * *", "image": "ghcr.io/credit-jobs/credit-jobs:1"},
}


@cache
def _program(expression: str) -> Any:
    return _env.program(_env.compile(expression))


def _cel(expression: str, activation: dict[str, Any]) -> Any:
    return _program(expression).evaluate(activation)


def denials(
    policy: dict[str, Any], user: str, groups: list[str], old: dict[str, Any], new: dict[str, Any]
) -> list[str]:
    """What the policy says to an UPDATE of `old` to `new` by `user`: the messages of the failed validations, [] when
    admitted (or not matched: then RBAC alone decides)."""
    request = {"userInfo": {"username": user, "groups": groups}, "operation": "UPDATE"}
    activation: dict[str, Any] = {
        "request": celpy.json_to_cel(request),
        "object": celpy.json_to_cel(new),
        "oldObject": celpy.json_to_cel(old),
    }
    spec = policy["spec"]
    if not all(_cel(c["expression"], activation) for c in spec["matchConditions"]):
        return []
    variables = celpy.celtypes.MapType()
    for variable in spec["variables"]:  # in order: a variable may use the ones before it
        value = _cel(variable["expression"], {**activation, "variables": variables})
        variables[celpy.celtypes.StringType(variable["name"])] = value
    activation["variables"] = variables
    return [v["message"] for v in spec["validations"] if not _cel(v["expression"], activation)]


def merged(old: dict[str, Any], annotations: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """`old` after a JSON merge patch of its annotations (None removes one) and top-level `spec` / `metadata` keys."""
    new = copy.deepcopy(old)
    for key, value in (annotations or {}).items():
        if value is None:
            new["metadata"]["annotations"].pop(key, None)
        else:
            new["metadata"]["annotations"][key] = value
    for path, value in changes.items():
        section, field = path.split("__")
        new[section][field] = value
    return new


@pytest.fixture
def policy(render: Any) -> dict[str, Any]:
    return only(render(VALUES), "ValidatingAdmissionPolicy")


RUN_NOW = {
    ANNOTATION_RUN_NOW: "20261207T090000Z-ab12cd34",
    ANNOTATION_RUN_PERIOD: None,
    ANNOTATION_REQUESTED_BY: "token:scheduler",
}


@pytest.mark.parametrize(("user", "groups"), [(API_SA, []), ("alice", ["billing-oncall", "system:authenticated"])])
def test_a_triggering_principal_may_start_a_run_and_change_nothing_else(
    policy: dict[str, Any], user: str, groups: list[str]
) -> None:
    # what `credit-jobs trigger` and the API's cluster mode send (commands.request_run): admitted
    assert denials(policy, user, groups, BEFORE, merged(BEFORE, RUN_NOW)) == []
    assert denials(policy, user, groups, BEFORE, merged(BEFORE, {ANNOTATION_RUN_PERIOD: "2026-11"})) == []
    spec_changes = [
        {"spec__image": "evil.example/miner:latest"},
        {"spec__databaseSecretRef": {"name": "prod-admin-db", "key": "url"}},
        {"spec__schedule": "* * * * *"},
    ]
    for change in spec_changes:
        (said,) = denials(policy, user, groups, BEFORE, merged(BEFORE, RUN_NOW, **change))
        assert "not change a CreditJob's spec" in said
    (said,) = denials(policy, user, groups, BEFORE, merged(BEFORE, metadata__labels={"team": "other"}))
    assert "labels" in said
    for other in ({"owner": "me"}, {"owner": None}, {"credits.dev/paused": "true"}):
        (said,) = denials(policy, user, groups, BEFORE, merged(BEFORE, other))
        assert "only the credits.dev/run-now, run-period and requested-by annotations" in said


@pytest.mark.parametrize(
    ("user", "groups"),
    [
        (f"system:serviceaccount:{NAMESPACE}:credit-jobs-operator", []),  # the operator: its own bookkeeping
        ("bob", ["platform-admins"]),  # someone RBAC lets edit CreditJobs
        ("system:serviceaccount:other:credit-jobs-api", []),  # another release's API: not this policy's principal
    ],
)
def test_everyone_else_is_left_to_rbac(policy: dict[str, Any], user: str, groups: list[str]) -> None:
    assert denials(policy, user, groups, BEFORE, merged(BEFORE, spec__image="registry.example/credit-jobs:2")) == []


def test_the_policy_binding_and_the_trigger_role_render_valid_and_only_when_someone_triggers(render: Any) -> None:
    objects = render(VALUES)
    binding = only(objects, "ValidatingAdmissionPolicyBinding")
    policy = only(objects, "ValidatingAdmissionPolicy")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    assert policy["spec"]["failurePolicy"] == "Fail"
    (role,) = [r for r in of_kind(objects, "ClusterRole") if r["metadata"]["name"] == policy["metadata"]["name"]]
    assert role["rules"] == [
        {"apiGroups": ["credits.dev"], "resources": ["creditjobs"], "verbs": ["get", "list", "watch", "patch"]}
    ]
    for obj in (policy, binding, role):
        for version in KUBE_VERSIONS[1:]:  # ValidatingAdmissionPolicy v1: Kubernetes 1.30+ (rbac.triggerPolicy)
            kubernetes_validate.validate(json.loads(json.dumps(obj)), version, strict=True)
    assert of_kind(render({}), "ValidatingAdmissionPolicy") == []  # no API, no trigger groups: nobody to limit
    off = render({**VALUES, "rbac": {"triggerPolicy": False, "triggerGroups": ["billing-oncall"]}})
    assert of_kind(off, "ValidatingAdmissionPolicy") == []
