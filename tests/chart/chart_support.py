"""Helpers shared by the chart tests: where the chart is, rendering it, picking objects, tool lookup.

Imported by the tests in tests/chart (pytest puts this folder on sys.path); fixtures live in conftest.py.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "credit-jobs"
RELEASE = "credit-jobs"
NAMESPACE = "billing"
ENVIRONMENTS = ("dev", "staging", "prod")
# Kubernetes minor versions the rendered manifests must be valid for.
KUBE_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33", "1.34", "1.35")

Manifest = dict[str, Any]


def env_values(env: str) -> dict[str, Any]:
    """The values of one environment file (values-<env>.yaml)."""
    loaded: dict[str, Any] = yaml.safe_load((CHART / f"values-{env}.yaml").read_text())
    return loaded


def package_version() -> str:
    """The Python package version from pyproject.toml (the chart's appVersion and the image version)."""
    version: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    return version


def render_objects(chart: helm_python.Chart, values: dict[str, Any], *, namespace: str = NAMESPACE) -> list[Manifest]:
    """Render the chart like `helm template` and parse every manifest (NOTES.txt excluded)."""
    rendered = chart.render(values, name=RELEASE, namespace=namespace)
    objects: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def of_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] == kind]


def only(objects: list[Manifest], kind: str) -> Manifest:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def require_tool(name: str) -> str:
    """Path of a system tool; fails (never skips) when it is missing, since `make test` installs it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make system-deps` (Debian prometheus, prometheus-pushgateway)")
    return path


def monitoring_values(**alerts: dict[str, Any]) -> dict[str, Any]:
    """Values with the ServiceMonitor, PrometheusRule and dashboard on, and the HTTP API (whose alerts come with it),
    plus per-alert overrides."""
    return {
        "api": {"enabled": True, "credentialsSecret": "api-creds"},
        "metrics": {"serviceMonitor": {"enabled": True}},
        "prometheusRule": {"enabled": True, "alerts": alerts},
        "dashboards": {"enabled": True},
        "pushgateway": {"url": "http://pushgateway.monitoring:9091"},
    }


def rule_groups(objects: list[Manifest]) -> list[dict[str, Any]]:
    """The Prometheus rule groups of the rendered PrometheusRule (what Prometheus would load)."""
    groups: list[dict[str, Any]] = only(objects, "PrometheusRule")["spec"]["groups"]
    return groups
