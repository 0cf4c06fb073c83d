"""Property: every spec the CRD admits renders a CronJob (and one-off Jobs) that Kubernetes' own schema accepts,
with names within limits and the container contract intact — for generated specs, not just hand-picked ones."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from operator_crd_support import admit

from credit_operator.creditjob import parse_creditjob
from credit_operator.cronjob_manifest import (
    ManifestDefaults,
    build_cronjob,
    build_job_from_cronjob,
    catch_up_job_name,
    manual_job_name,
    params_to_args,
)

names = st.from_regex(r"[a-z]([a-z0-9-]{0,50}[a-z0-9])?", fullmatch=True)
param_keys = st.from_regex(r"[a-z][a-zA-Z0-9]{0,15}", fullmatch=True)
param_values = st.one_of(st.booleans(), st.integers(-(10**6), 10**6), st.text("abc-_./:", min_size=1, max_size=12))
specs = st.fixed_dictionaries(
    {
        "usecase": st.sampled_from(["distribute-credits", "expire-credits", "cleanup-storage", "purge-retention"]),
        "schedule": st.sampled_from(["0 0 1 * *", "@daily", "*/15 * * * *", "10 0 * * 1-5", "@hourly"]),
    },
    optional={
        "timeZone": st.sampled_from(["UTC", "Asia/Shanghai", "America/New_York"]),
        "period": st.sampled_from(["monthly", "weekly", "daily", "hourly"]),
        "suspend": st.booleans(),
        "concurrencyPolicy": st.sampled_from(["Forbid", "Replace", "Allow"]),
        "startingDeadlineSeconds": st.integers(10, 2678400),
        "activeDeadlineSeconds": st.integers(1, 604800),
        "backoffLimit": st.integers(0, 20),
        "parallelism": st.integers(1, 64),
        "catchUp": st.fixed_dictionaries({"maxPeriods": st.integers(0, 24)}),
        "historyLimits": st.fixed_dictionaries({"successful": st.integers(0, 100), "failed": st.integers(0, 100)}),
        "params": st.dictionaries(param_keys, param_values, max_size=5),
        "image": st.sampled_from(["", "registry.example/credit-jobs:2"]),
    },
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=names, spec=specs, token=st.text(min_size=1, max_size=40))
def test_every_admitted_spec_renders_valid_kubernetes_objects(name: str, spec: dict[str, Any], token: str) -> None:
    stored, errors = admit(
        {
            "apiVersion": "credits.dev/v1alpha1",
            "kind": "CreditJob",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": spec,
        }
    )
    assert errors == []
    job = parse_creditjob({**stored, "metadata": {"name": name, "namespace": "ns", "uid": "u"}})
    cron = build_cronjob(job, ManifestDefaults(image="default/image:1"))
    kubernetes_validate.validate(cron, "1.35", strict=True)
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["credit-jobs", "run", spec["usecase"]]
    assert container["args"] == params_to_args(spec.get("params", {}))
    for one_off in (
        build_job_from_cronjob(cron, name=manual_job_name(name, token), trigger="manual", period_key=None),
        build_job_from_cronjob(
            cron, name=catch_up_job_name(name, "2026-11"), trigger="catch-up", period_key="2026-11", suspend=True
        ),
    ):
        assert len(one_off["metadata"]["name"]) <= 63
        kubernetes_validate.validate(one_off, "1.35", strict=True)
