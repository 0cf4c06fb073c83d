"""The shared vocabulary (`credit_jobs.domain.contract`) is the one the CRD, the jobs core and the operator use.

The CRD is YAML a cluster validates against, so it cannot import the contract: this test keeps its enums equal.
The rest checks that the copies that used to drift (registry, audit CHECK, settings, rendered container) now read
the contract.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from credit_jobs.adapters.tables import JobRun
from credit_jobs.domain import contract
from credit_jobs.domain.errors import ConfigError, RunFailed
from credit_jobs.entrypoints.settings import VARIABLES, Settings
from credit_jobs.usecases.registry import USECASES
from credit_operator.creditjob import parse_creditjob
from credit_operator.cronjob_manifest import ManifestDefaults, build_cronjob, build_job_from_cronjob

CRD = Path(__file__).resolve().parents[2] / "charts" / "credit-jobs" / "crds" / "creditjobs.yaml"


def _spec_properties() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    properties: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    return properties


def test_the_crd_enums_equal_the_contract() -> None:
    spec = _spec_properties()
    assert spec["usecase"]["enum"] == list(contract.USECASES)
    assert spec["period"]["enum"] == list(contract.PERIODS)


def test_the_registry_runs_exactly_the_contract_usecases_with_their_default_periods() -> None:
    assert {name: spec.default_period for name, spec in USECASES.items()} == dict(contract.USECASE_PERIODS)


def test_the_audit_row_accepts_exactly_the_contract_triggers() -> None:
    checks = [str(c.sqltext) for c in JobRun.__table__.constraints if c.name == "job_runs_trigger"]  # type: ignore[attr-defined]
    assert checks == [f"trigger IN ({', '.join(repr(t) for t in contract.TRIGGERS)})"]


def test_exit_codes_come_from_the_contract() -> None:
    assert (ConfigError("x").exit_code, RunFailed("x").exit_code) == (contract.EXIT_CONFIG_ERROR, contract.EXIT_FAILED)


def test_the_container_environment_is_the_contract_and_the_jobs_settings_read_it() -> None:
    job = parse_creditjob(
        {
            "metadata": {"name": "monthly", "namespace": "billing"},
            "spec": {"usecase": "distribute-credits", "schedule": "0 0 1 * *", "parallelism": 3},
        }
    )
    cronjob = build_cronjob(job, ManifestDefaults(image="img", pushgateway_url="http://pushgateway:9091"))
    catch_up = build_job_from_cronjob(
        cronjob, name="monthly-c-1", trigger=contract.Trigger.CATCH_UP, period_key="2026-10"
    )
    job_spec = cronjob["spec"]["jobTemplate"]["spec"]
    rendered = {e["name"] for e in job_spec["template"]["spec"]["containers"][0]["env"]}
    rendered |= {e["name"] for e in catch_up["spec"]["template"]["spec"]["containers"][0]["env"]}
    # Kubernetes sets the completion index itself on Indexed Jobs; the operator renders everything else.
    assert rendered == set(contract.CONTAINER_ENV) - {contract.ENV_COMPLETION_INDEX}
    assert job_spec["completionMode"] == "Indexed"
    assert set(VARIABLES) >= set(contract.CONTAINER_ENV)
    (rule, _) = job_spec["podFailurePolicy"]["rules"]
    assert rule["onExitCodes"]["values"] == [contract.EXIT_CONFIG_ERROR]
    assert cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"][:2] == [
        "credit-jobs",
        "run",
    ]


def test_the_default_batch_size_is_the_contracts() -> None:
    assert Settings().creditjobs_batch_size == contract.DEFAULT_BATCH_SIZE
