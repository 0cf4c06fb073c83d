"""The CreditJob CRD: structure, defaults that match the operator's, and a table of objects the API server
would accept or reject — checked by the openAPIV3Schema (jsonschema) and the CEL rules (cel-python)."""

from __future__ import annotations

import gzip
import importlib.resources
import json
from typing import Any

import pytest
from operator_crd_support import (
    admit,
    cel_errors,
    crd_version,
    example_manifests,
    load_crd,
    open_api_schema,
    schema_errors,
)

from credit_operator.creditjob import CreditJobSpec, parse_spec
from tests.support.crd_admission import apply_defaults


def cj(name: str = "monthly-credits", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "credits.dev/v1alpha1",
        "kind": "CreditJob",
        "metadata": {"name": name, "namespace": "billing"},
        "spec": {"usecase": "distribute-credits", "schedule": "0 0 1 * *", **spec},
    }


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, schema)]
    for name, sub in (schema.get("properties") or {}).items():
        nodes += _walk(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            nodes += _walk(schema[key], f"{path}[{key}]")
    return nodes


def test_the_crd_names_the_resource_as_designed() -> None:
    crd = load_crd()
    assert crd["metadata"]["name"] == "creditjobs.credits.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == "CreditJob"
    assert crd["spec"]["names"]["shortNames"] == ["crj"]


def builtin_short_names() -> set[str]:
    """Short names of built-in resources: kmock's bundled discovery of a real cluster (K3s, CRDs stripped)."""
    data = (importlib.resources.files("kmock._internal") / "resources.json.gz").read_bytes()
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.update(node.get("shortNames") or [])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(gzip.decompress(data)))
    return found


def test_the_short_name_collides_with_no_built_in_resource() -> None:
    builtin = builtin_short_names()
    assert {"cj", "po", "deploy"} <= builtin  # the list is the real one (`cj` is batch/v1 CronJob)
    assert not set(load_crd()["spec"]["names"]["shortNames"]) & builtin
    version = crd_version()
    assert version["name"] == "v1alpha1"
    assert version["served"]
    assert version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns_show_usecase_schedule_suspension_and_times() -> None:
    columns = {c["name"]: c["jsonPath"] for c in crd_version()["additionalPrinterColumns"]}
    assert columns == {
        "Usecase": ".spec.usecase",
        "Schedule": ".spec.schedule",
        "Suspended": ".spec.suspend",
        "Last Success": ".status.lastSuccessfulTime",
        "Next Run": ".status.nextScheduleTime",
        "Age": ".metadata.creationTimestamp",
    }


def test_the_schema_is_structural_and_every_field_has_a_description() -> None:
    for path, node in _walk(open_api_schema()):
        if path in ("", ".metadata", ".apiVersion", ".kind"):
            continue
        typed = (
            "type" in node or node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
        )
        assert typed, f"{path} has no type (not structural)"
        assert node.get("description"), f"{path} has no description (kubectl explain would be empty)"


def test_crd_defaults_are_the_operators_defaults() -> None:
    """The operator applies the same defaults itself (for objects that skipped the API server's defaulting)."""
    stored = apply_defaults(open_api_schema(), cj())
    assert parse_spec(stored["spec"]) == parse_spec(cj()["spec"])
    defaults = CreditJobSpec(usecase="x", schedule="y")
    spec = stored["spec"]
    assert spec["timeZone"] == defaults.time_zone
    assert spec["period"] == defaults.period
    assert spec["concurrencyPolicy"] == defaults.concurrency_policy
    assert spec["startingDeadlineSeconds"] == defaults.starting_deadline_seconds
    assert spec["activeDeadlineSeconds"] == defaults.active_deadline_seconds
    assert spec["backoffLimit"] == defaults.backoff_limit
    assert spec["parallelism"] == defaults.parallelism
    assert spec["catchUp"]["maxPeriods"] == defaults.catch_up_max_periods
    assert spec["catchUp"]["retryFailed"] == defaults.catch_up_retry_failed
    assert spec["historyLimits"] == {"successful": defaults.successful_history, "failed": defaults.failed_history}


VALID = [
    pytest.param(cj(), id="minimal"),
    pytest.param(cj(schedule="@monthly"), id="macro"),
    pytest.param(cj(schedule="*/15 9-17 * * MON-FRI", period="hourly"), id="ranges-and-names"),
    pytest.param(cj(name="a" * 52), id="name-of-52"),
    pytest.param(cj(parallelism=64, catchUp={"maxPeriods": 24}), id="upper-bounds"),
    pytest.param(cj(parallelism=1, catchUp={"maxPeriods": 0}), id="lower-bounds"),
    pytest.param(cj(params={"batchSize": 5000, "dryRun": False, "bucket": "b", "ratio": 0.5}), id="params"),
    pytest.param(cj(resources={"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"cpu": 2}}), id="resources"),
    pytest.param(cj(suspend=True, suspendReason="migration"), id="suspended"),
]


@pytest.mark.parametrize("obj", VALID)
def test_valid_creditjobs_are_accepted(obj: dict[str, Any]) -> None:
    _, errors = admit(obj)
    assert errors == []


# (object, which layer rejects it, a fragment of the message)
INVALID = [
    pytest.param(cj(usecase="grant-everything"), "schema", "is not one of", id="unknown-usecase"),
    pytest.param(cj(period="yearly"), "schema", "is not one of", id="unknown-period"),
    pytest.param(cj(concurrencyPolicy="Never"), "schema", "is not one of", id="unknown-concurrency"),
    pytest.param(cj(startingDeadlineSeconds=5), "schema", "less than the minimum", id="deadline-too-short"),
    pytest.param(cj(activeDeadlineSeconds=0), "schema", "less than the minimum", id="timeout-zero"),
    pytest.param(cj(backoffLimit=-1), "schema", "less than the minimum", id="negative-backoff"),
    pytest.param(cj(backoffLimit="3"), "schema", "is not of type 'integer'", id="backoff-as-string"),
    pytest.param(cj(historyLimits={"successful": 101}), "schema", "greater than the maximum", id="history"),
    pytest.param(cj(suspend="yes"), "schema", "is not of type 'boolean'", id="suspend-not-bool"),
    pytest.param(cj(schedule=""), "schema", "should be non-empty", id="empty-schedule"),
    pytest.param(cj(timeZone="x" * 65), "schema", "is too long", id="zone-too-long"),
    pytest.param(cj(params={f"p{i}": i for i in range(33)}), "schema", "too many properties", id="many-params"),
    pytest.param(
        {**cj(), "spec": {"usecase": "expire-credits"}}, "schema", "'schedule' is a required", id="no-schedule"
    ),
    pytest.param(cj(schedule="0 0 1 *"), "cel", "five-field cron", id="four-fields"),
    pytest.param(cj(schedule="0 0 1 * * *"), "cel", "five-field cron", id="six-fields"),
    pytest.param(cj(schedule="TZ=UTC 0 0 1 * *"), "cel", "five-field cron", id="tz-prefix"),
    pytest.param(cj(schedule="@fortnightly"), "cel", "five-field cron", id="unknown-macro"),
    pytest.param(cj(schedule="0 0 L * *"), "cel", "five-field cron", id="last-day-L"),
    pytest.param(cj(schedule="0 0 15W * *"), "cel", "five-field cron", id="weekday-W"),
    pytest.param(cj(schedule="H 0 * * *"), "cel", "five-field cron", id="hash-H"),
    pytest.param(cj(name="a" * 53), "cel", "at most 52 characters", id="name-of-53"),
    pytest.param(cj(parallelism=0), "cel", "between 1 and 64", id="parallelism-zero"),
    pytest.param(cj(parallelism=65), "cel", "between 1 and 64", id="parallelism-65"),
    pytest.param(cj(catchUp={"maxPeriods": 25}), "cel", "between 0 (catch-up off) and 24", id="catch-up-25"),
    pytest.param(cj(catchUp={"maxPeriods": -1}), "cel", "between 0 (catch-up off) and 24", id="catch-up-negative"),
    pytest.param(cj(params={"batch-size": 5}), "cel", "camelCase", id="kebab-param-key"),
]


@pytest.mark.parametrize(("obj", "layer", "fragment"), INVALID)
def test_malformed_creditjobs_are_rejected(obj: dict[str, Any], layer: str, fragment: str) -> None:
    stored = apply_defaults(open_api_schema(), obj)
    errors = schema_errors(stored) if layer == "schema" else cel_errors(stored)
    assert any(fragment in e for e in errors), errors


def test_bounds_are_enforced_by_both_the_schema_and_cel() -> None:
    """parallelism and catchUp.maxPeriods carry schema bounds and a CEL rule with a clearer message."""
    for bad in (cj(parallelism=65), cj(catchUp={"maxPeriods": 25})):
        stored = apply_defaults(open_api_schema(), bad)
        assert schema_errors(stored)
        assert cel_errors(stored)


@pytest.mark.parametrize(("name", "manifest"), example_manifests(), ids=[n for n, _ in example_manifests()])
def test_every_example_is_a_valid_creditjob(name: str, manifest: dict[str, Any]) -> None:
    _, errors = admit(manifest)
    assert errors == [], name


def test_there_is_an_example_per_usecase() -> None:
    usecases = {m["spec"]["usecase"] for _, m in example_manifests()}
    assert usecases == {"distribute-credits", "expire-credits", "cleanup-storage", "purge-retention"}
