"""values.yaml is fully commented, values.schema.json rejects bad values with a clear message, and the values
reference in docs/install.md lists exactly the documented keys with their defaults.
"""

from __future__ import annotations

import re
from typing import Any

import helm_python
import pytest
from chart_support import CHART, ENVIRONMENTS, REPO, env_values
from chart_values_doc import commented, documented_keys, render_default

VALUES = CHART / "values.yaml"
INSTALL_DOC = REPO / "docs" / "install.md"

# (values, the JSON pointer Helm's message must name)
BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "unknown top-level key (typo)": ({"prometheusRules": {"enabled": True}}, "additional properties 'prometheusRules'"),
    "unknown nested key (typo)": ({"operator": {"replica": 2}}, "additional properties 'replica'"),
    "latest image tag": ({"image": {"tag": "latest"}}, "/image/tag"),
    "malformed digest": ({"image": {"digest": "sha256:xyz"}}, "/image/digest"),
    "unknown pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "zero replicas": ({"operator": {"replicas": 0}}, "/operator/replicas"),
    "replicas as a string": ({"operator": {"replicas": "two"}}, "/operator/replicas"),
    "namespace that is no DNS label": (
        {"operator": {"watch": {"namespaces": ["Billing_EU"]}}},
        "/operator/watch/namespaces/0",
    ),
    "cluster-wide flag as a string": ({"operator": {"watch": {"clusterWide": "yes"}}}, "/operator/watch/clusterWide"),
    "unknown log format": ({"operator": {"logFormat": "xml"}}, "/operator/logFormat"),
    "privileged port": ({"operator": {"metricsPort": 80}}, "/operator/metricsPort"),
    "no database secret": ({"database": {"existingSecret": ""}}, "/database/existingSecret"),
    "pushgateway without scheme": ({"pushgateway": {"url": "pushgateway:9091"}}, "/pushgateway/url"),
    "root allowed": ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
    "writable root filesystem": (
        {"containerSecurityContext": {"readOnlyRootFilesystem": False}},
        "/containerSecurityContext/readOnlyRootFilesystem",
    ),
    "privilege escalation": (
        {"containerSecurityContext": {"allowPrivilegeEscalation": True}},
        "/containerSecurityContext/allowPrivilegeEscalation",
    ),
    "unknown severity": (
        {"prometheusRule": {"alerts": {"creditJobFailed": {"severity": "page"}}}},
        "/prometheusRule/alerts/creditJobFailed/severity",
    ),
    "for that is no duration": (
        {"prometheusRule": {"alerts": {"creditJobFailed": {"for": "ten minutes"}}}},
        "/prometheusRule/alerts/creditJobFailed/for",
    ),
    "interval factor below 1": (
        {"prometheusRule": {"alerts": {"creditJobNotSucceededRecently": {"intervalFactor": 0.5}}}},
        "/prometheusRule/alerts/creditJobNotSucceededRecently/intervalFactor",
    ),
    "error ratio above 1": (
        {"prometheusRule": {"alerts": {"creditJobsOperatorReconcileErrors": {"ratio": 5}}}},
        "/prometheusRule/alerts/creditJobsOperatorReconcileErrors/ratio",
    ),
    "runbook url with an anchor": (
        {"prometheusRule": {"runbookBaseUrl": "https://x/runbooks.md#top"}},
        "/prometheusRule/runbookBaseUrl",
    ),
    "creditjob without a name": (
        {"creditJobs": [{"spec": {"usecase": "distribute-credits", "schedule": "0 0 1 * *"}}]},
        "/creditJobs/0",
    ),
    "creditjob without a schedule": (
        {"creditJobs": [{"name": "a", "spec": {"usecase": "distribute-credits"}}]},
        "/creditJobs/0/spec",
    ),
    "api without its credentials secret": ({"api": {"enabled": True}}, "/api"),
    "api lock timeout of 0 (no timeout)": ({"api": {"lockTimeoutSeconds": 0}}, "/api/lockTimeoutSeconds"),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_helm_rejects_bad_values_naming_the_offending_key(chart, case: str) -> None:
    values, pointer = BAD_VALUES[case]
    with pytest.raises(helm_python.HelmValuesError) as raised:
        chart.render(values, name="credit-jobs", namespace="billing")
    assert pointer in str(raised.value)


@pytest.mark.parametrize("env", ["defaults", *ENVIRONMENTS])
def test_shipped_values_pass_the_schema(chart, env: str) -> None:
    values = {} if env == "defaults" else env_values(env)
    chart.validate_schema(chart.merge_values(values))


def test_schema_describes_every_property() -> None:
    schema = helm_python.Chart.load(CHART).schema
    assert schema is not None
    missing: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for name, sub in node.get("properties", {}).items():
            if "description" not in sub:
                missing.append(f"{path}.{name}")
            walk(sub, f"{path}.{name}")
        items = node.get("items")
        if isinstance(items, dict):
            walk(items, f"{path}[]")

    walk(schema, "")
    assert not missing


def test_every_values_key_is_commented() -> None:
    documented = {key.path for key in documented_keys(VALUES)}
    uncommented = [
        path
        for path, has_comment in commented(VALUES).items()
        if not has_comment and not any(path.startswith(f"{doc}.") for doc in documented)
    ]
    assert not uncommented, f"keys without a comment in values.yaml: {uncommented}"


def test_every_leaf_value_is_covered_by_a_documented_key() -> None:
    documented = {key.path for key in documented_keys(VALUES)}
    leaves = [path for path, _ in _leaves(helm_python.Chart.load(CHART).merge_values({}))]
    uncovered = [p for p in leaves if not any(p == d or p.startswith(f"{d}.") for d in documented)]
    assert not uncovered, uncovered


def _leaves(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        return [leaf for key, sub in value.items() for leaf in _leaves(sub, f"{prefix}.{key}" if prefix else key)]
    return [(prefix, value)]


def _install_doc_reference() -> dict[str, tuple[str, str]]:
    """The rows of the values reference table in docs/install.md: key → (default, description)."""
    rows = {}
    for line in INSTALL_DOC.read_text().splitlines():
        match = re.match(r"^\|\s*`([^`]+)`\s*\|\s*`(.*)`\s*\|\s*(.*?)\s*\|$", line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3))
    return rows


def test_install_doc_values_reference_matches_values_yaml() -> None:
    reference = _install_doc_reference()
    keys = documented_keys(VALUES)
    assert set(reference) == {key.path for key in keys}, "docs/install.md values table is out of sync"
    for key in keys:
        default, description = reference[key.path]
        assert default == render_default(key.default), key.path
        assert description == key.description, key.path
