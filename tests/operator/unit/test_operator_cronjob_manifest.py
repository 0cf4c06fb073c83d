"""CreditJob → CronJob manifest and CronJob → one-off Job: the container contract (docs/contract.md), every spec
field, hardening, deterministic names, Kubernetes schema validity (1.29 to 1.35), and drift detection."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
import pytest

from credit_operator.cronjob_manifest import (
    ManifestDefaults,
    build_cronjob,
    build_job_from_cronjob,
    catch_up_job_name,
    drift,
    manual_job_name,
    params_to_args,
    refused_by_policy,
)
from tests.support import creditjobs

DEFAULTS = ManifestDefaults(image="registry.test/credit-jobs:1.0", pushgateway_url="http://pgw:9091")
K8S_VERSIONS = ["1.29", "1.30", "1.31", "1.32", "1.33", "1.34", "1.35"]


creditjob = functools.partial(creditjobs.creditjob, name="monthly", namespace="billing", uid="u-1", generation=1)


def container(cronjob: dict[str, Any]) -> dict[str, Any]:
    (only,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


@pytest.mark.parametrize(
    ("params", "args"),
    [
        ({}, []),
        ({"batchSize": 5000, "dryRun": False}, ["--batch-size", "5000"]),
        ({"dryRun": True}, ["--dry-run"]),
        ({"bucket": "s3://b", "maxAgeDays": 30}, ["--bucket", "s3://b", "--max-age-days", "30"]),
        ({"ratio": 0.5}, ["--ratio", "0.5"]),
        ({"zeta": 1, "alpha": 2}, ["--alpha", "2", "--zeta", "1"]),
    ],
)
def test_params_become_kebab_case_flags(params: dict[str, Any], args: list[str]) -> None:
    assert params_to_args(params) == args


def test_the_container_follows_the_contract() -> None:
    cron = build_cronjob(creditjob(params={"batchSize": 5000, "dryRun": False}, timeZone="Asia/Shanghai"), DEFAULTS)
    c = container(cron)
    assert c["command"] == ["credit-jobs", "run", "distribute-credits"]
    assert c["args"] == ["--batch-size", "5000"]
    assert c["image"] == "registry.test/credit-jobs:1.0"
    assert env(c) == {
        "CREDITJOB_NAME": "monthly",
        "CREDITJOB_NAMESPACE": "billing",
        "CREDITJOB_SCHEDULE": "0 0 1 * *",
        "CREDITJOB_TIME_ZONE": "Asia/Shanghai",
        "CREDITJOB_PERIOD": "monthly",
        "CREDITJOB_SHARDS": "1",
        "CREDITJOB_TRIGGER": "schedule",
        "DATABASE_URL": {"secretKeyRef": {"name": "credit-jobs-db", "key": "url"}},
        "PUSHGATEWAY_URL": "http://pgw:9091",
        "LOG_FORMAT": "json",
    }


def test_pushgateway_is_omitted_when_not_configured() -> None:
    cron = build_cronjob(creditjob(), ManifestDefaults(image="i"))
    assert "PUSHGATEWAY_URL" not in env(container(cron))


def test_spec_fields_reach_the_cronjob_and_job() -> None:
    job = creditjob(
        schedule="30 2 * * *",
        timeZone="Europe/Berlin",
        period="daily",
        suspend=True,
        concurrencyPolicy="Replace",
        startingDeadlineSeconds=600,
        activeDeadlineSeconds=900,
        backoffLimit=5,
        historyLimits={"successful": 7, "failed": 2},
        image="custom/image:2",
        databaseSecretRef={"name": "other-db", "key": "dsn"},
        resources={"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}},
    )
    cron = build_cronjob(job, DEFAULTS)
    spec = cron["spec"]
    assert spec["schedule"] == "30 2 * * *"
    assert spec["timeZone"] == "Europe/Berlin"
    assert spec["concurrencyPolicy"] == "Replace"
    assert spec["startingDeadlineSeconds"] == 600
    assert spec["suspend"] is True
    assert spec["successfulJobsHistoryLimit"] == 7
    assert spec["failedJobsHistoryLimit"] == 2
    job_spec = spec["jobTemplate"]["spec"]
    assert job_spec["activeDeadlineSeconds"] == 900
    assert job_spec["backoffLimit"] == 5
    assert "completionMode" not in job_spec
    c = container(cron)
    assert c["image"] == "custom/image:2"
    assert c["resources"] == {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}}
    assert env(c)["DATABASE_URL"] == {"secretKeyRef": {"name": "other-db", "key": "dsn"}}
    assert env(c)["CREDITJOB_PERIOD"] == "daily"


def test_default_resources_apply_when_none_are_given() -> None:
    assert container(build_cronjob(creditjob(), DEFAULTS))["resources"]["requests"] == {
        "cpu": "100m",
        "memory": "256Mi",
    }


def test_parallelism_makes_an_indexed_job_with_one_shard_per_index() -> None:
    cron = build_cronjob(creditjob(parallelism=4), DEFAULTS)
    job_spec = cron["spec"]["jobTemplate"]["spec"]
    assert job_spec["completionMode"] == "Indexed"
    assert job_spec["completions"] == 4
    assert job_spec["parallelism"] == 4
    assert env(container(cron))["CREDITJOB_SHARDS"] == "4"


def test_exit_code_2_fails_the_job_at_once() -> None:
    job_spec = build_cronjob(creditjob(), DEFAULTS)["spec"]["jobTemplate"]["spec"]
    rule = job_spec["podFailurePolicy"]["rules"][0]
    assert rule == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "credit-jobs", "operator": "In", "values": [2]},
    }
    assert job_spec["template"]["spec"]["restartPolicy"] == "Never"  # required by podFailurePolicy


def test_pods_are_hardened() -> None:
    pod = build_cronjob(creditjob(), DEFAULTS)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    sc = pod["containers"][0]["securityContext"]
    assert sc == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def test_labels_name_the_app_and_the_creditjob() -> None:
    cron = build_cronjob(creditjob(name="expire"), DEFAULTS)
    for labels in (
        cron["metadata"]["labels"],
        cron["spec"]["jobTemplate"]["metadata"]["labels"],
        cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"],
    ):
        assert labels["credits.dev/creditjob"] == "expire"
        assert labels["app.kubernetes.io/name"] == "credit-jobs"
        assert labels["app.kubernetes.io/instance"] == "expire"
        assert labels["app.kubernetes.io/managed-by"] == "credit-jobs-operator"
        assert labels["app.kubernetes.io/component"] == "distribute-credits"


SPEC_VARIANTS = [
    pytest.param({}, id="defaults"),
    pytest.param({"parallelism": 8, "suspend": True, "concurrencyPolicy": "Allow"}, id="indexed-suspended"),
    pytest.param({"params": {"dryRun": True, "batchSize": 10}, "resources": {"limits": {"cpu": "2"}}}, id="params"),
    pytest.param({"timeZone": "Asia/Shanghai", "historyLimits": {"successful": 0, "failed": 0}}, id="zone"),
]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("spec", SPEC_VARIANTS)
def test_every_rendered_manifest_validates_against_kubernetes(version: str, spec: dict[str, Any]) -> None:
    job = creditjob(name="n" * 52, **spec)
    cron = build_cronjob(job, DEFAULTS)
    kubernetes_validate.validate(cron, version, strict=True)
    for one_off in (
        build_job_from_cronjob(
            cron,
            name=manual_job_name(cron["metadata"]["name"], "tok"),
            trigger="manual",
            period_key="2026-10",
            token="tok",
        ),
        build_job_from_cronjob(
            cron,
            name=catch_up_job_name(cron["metadata"]["name"], "2026-09"),
            trigger="catch-up",
            period_key="2026-09",
            scheduled_time=datetime(2026, 9, 1, tzinfo=UTC),
            suspend=True,
        ),
    ):
        kubernetes_validate.validate(one_off, version, strict=True)


def test_job_names_fit_kubernetes_limits_and_are_deterministic() -> None:
    longest = "n" * 52
    for name in (manual_job_name(longest, "any-token"), catch_up_job_name(longest, "2026-11-28T13")):
        assert len(name) <= 63
    assert manual_job_name("a", "t1") == manual_job_name("a", "t1") != manual_job_name("a", "t2")
    assert catch_up_job_name("a", "2026-09") != catch_up_job_name("a", "2026-10")


def test_a_run_now_job_copies_the_template_and_pins_trigger_and_period() -> None:
    cron = build_cronjob(creditjob(), DEFAULTS)
    job = build_job_from_cronjob(cron, name="monthly-m-1", trigger="manual", period_key="2026-10", token="tok")
    c = job["spec"]["template"]["spec"]["containers"][0]
    e = env(c)
    assert e["CREDITJOB_TRIGGER"] == "manual"
    assert e["CREDITJOB_PERIOD_KEY"] == "2026-10"
    assert [x["name"] for x in c["env"]].count("CREDITJOB_TRIGGER") == 1
    assert c["command"] == container(cron)["command"]
    assert job["metadata"]["labels"]["credits.dev/trigger"] == "manual"
    assert job["metadata"]["annotations"]["credits.dev/run-now-token"] == "tok"
    assert "suspend" not in job["spec"]
    # the CronJob's template is not modified by building a Job from it
    assert env(container(cron))["CREDITJOB_TRIGGER"] == "schedule"


def test_a_run_now_job_without_period_key_resolves_the_period_itself() -> None:
    cron = build_cronjob(creditjob(), DEFAULTS)
    job = build_job_from_cronjob(cron, name="x", trigger="manual", period_key=None)
    assert "CREDITJOB_PERIOD_KEY" not in env(job["spec"]["template"]["spec"]["containers"][0])


def test_a_queued_catch_up_job_is_suspended_and_records_its_fire_time() -> None:
    cron = build_cronjob(creditjob(), DEFAULTS)
    job = build_job_from_cronjob(
        cron,
        name="x",
        trigger="catch-up",
        period_key="2026-09",
        scheduled_time=datetime(2026, 9, 1, tzinfo=UTC),
        suspend=True,
    )
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["annotations"]["credits.dev/scheduled-time"] == "2026-09-01T00:00:00Z"
    assert env(job["spec"]["template"]["spec"]["containers"][0])["CREDITJOB_TRIGGER"] == "catch-up"


def test_drift_ignores_server_defaults_but_sees_hand_edits() -> None:
    desired = build_cronjob(creditjob(), DEFAULTS)["spec"]
    live = {**desired, "extraDefault": True}
    live["jobTemplate"] = {
        **desired["jobTemplate"],
        "spec": {**desired["jobTemplate"]["spec"], "completionMode": "NonIndexed"},
    }
    assert drift(desired, live) == []
    assert drift(desired, {**desired, "schedule": "* * * * *"}) == ["schedule"]
    assert drift(desired, {**desired, "suspend": True}) == ["suspend"]
    assert drift({"r": {"cpu": "500m"}}, {"r": {"cpu": "0.5"}}) == []  # normalised quantities
    assert drift({"r": {"cpu": "500m"}}, {"r": {"cpu": "1"}}) == ["r.cpu"]
    assert drift({"env": [{"a": 1}]}, {"env": [{"a": 1}, {"b": 2}]}) == ["env"]
    assert drift({"args": [], "x": {}}, {}) == []  # the API server omits empty lists and maps
    assert drift({"args": ["--dry-run"]}, {}) == ["args"]


# --- who may run what: spec.image and spec.databaseSecretRef within the operator's allowlists ---------------------

POLICY = ManifestDefaults(
    image="ghcr.io/acme/credit-jobs:1.4.0",
    allowed_images=("registry.acme.internal/billing/credit-jobs", "ghcr.io/acme/credit-jobs-fork:2.0.0"),
    allowed_db_secrets=("billing-db-eu",),
)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({}, None),  # the defaults
        ({"image": "ghcr.io/acme/credit-jobs:1.3.9"}, None),  # the default image's repository, another version
        ({"image": "ghcr.io/acme/credit-jobs@sha256:" + "a" * 64}, None),
        ({"image": "registry.acme.internal/billing/credit-jobs:7"}, None),  # an allowed repository
        ({"image": "ghcr.io/acme/credit-jobs-fork:2.0.0"}, None),  # an allowed exact reference
        ({"image": "ghcr.io/acme/credit-jobs-fork:2.0.1"}, "spec.image 'ghcr.io/acme/credit-jobs-fork:2.0.1'"),
        ({"image": "attacker.example/miner:latest"}, "spec.image 'attacker.example/miner:latest'"),
        ({"image": "ghcr.io/acme/credit-jobs-evil:1"}, "spec.image 'ghcr.io/acme/credit-jobs-evil:1'"),
        ({"databaseSecretRef": {"name": "credit-jobs-db", "key": "url"}}, None),
        ({"databaseSecretRef": {"name": "billing-db-eu", "key": "dsn"}}, None),
        ({"databaseSecretRef": {"name": "payments-admin"}}, "spec.databaseSecretRef.name 'payments-admin'"),
    ],
)
def test_an_image_or_database_secret_outside_the_allowlists_is_a_problem_of_the_spec(
    spec: dict[str, Any], problem: str | None
) -> None:
    found = refused_by_policy(creditjob(**spec).spec, POLICY)
    if problem is None:
        assert found == []
    else:
        (line,) = found
        assert line.startswith(problem), line
        assert "allow" in line  # how to fix: the chart value to extend
