"""The Grafana dashboard parses and is complete, and every metric that it or an alert queries is one the code exports.

Names come from the code's own registries: `credit_jobs.observability.metrics.exported_metric_names()` (the
metrics a run pushes), `credit_operator.metrics.exported_metric_names()` (the operator's /metrics, counters
with `_total`, histograms with `_bucket`/`_sum`/`_count`) and `credit_jobs.observability.api_metrics` (the HTTP API's
/metrics). The dashboard's queries are also parsed by promtool.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import CHART, monitoring_values, rule_groups

from credit_jobs.observability import api_metrics
from credit_jobs.observability import metrics as run_metrics
from credit_operator import metrics as operator_metrics

DASHBOARD = CHART / "dashboards" / "credit-jobs.json"
# Names no credit-jobs registry exports, each allowed for a reason.
ALLOWED_FOREIGN_METRICS = {
    "up": "Prometheus' own per-target scrape health; CreditJobsOperatorDown uses it for the operator target",
}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right", "atan2"}
# Grafana's variables, replaced by plausible values so promtool can parse the queries.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__range": "1d",
    "$__interval": "1m",
    "$namespace": ".*",
    "$creditjob": ".*",
}
# Metrics that carry a CreditJob's namespace and name (pushed by runs, or per-CreditJob series of the operator).
PER_CREDITJOB_PREFIXES = ("creditjobs_run_", "creditjobs_creditjob_", "creditjobs_failed_periods")


def exported_metric_names() -> set[str]:
    return (
        run_metrics.exported_metric_names()
        | operator_metrics.exported_metric_names()
        | api_metrics.exported_api_metric_names()
    )


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and durations excluded)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, regexes)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", text):
        token = match.group(0)
        if text[match.end() :].lstrip().startswith("(") or token.lower() in PROMQL_KEYWORDS:
            continue  # a function / aggregation call, or an operator keyword
        names.add(token)
    return names


def _targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [target for panel in dashboard["panels"] for target in panel.get("targets", [])]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


@pytest.fixture(scope="module")
def alert_exprs(chart) -> dict[str, str]:
    from chart_support import render_objects

    rules = [r for g in rule_groups(render_objects(chart, monitoring_values())) for r in g["rules"]]
    return {f"{rule['alert']}#{i}": rule["expr"] for i, rule in enumerate(rules)}


def test_the_metric_name_extractor_finds_metrics_and_skips_everything_else() -> None:
    expr = (
        'sum by (creditjob) (rate(foo_total{job="x", le=~"a|b"}[5m] offset 1h)) / on (creditjob) group_left bar'
        ' > 1.5e3 * baz:recorded unless absent(up{job="y"} == 1) and histogram_quantile(0.9, qux_bucket)'
    )
    assert metric_names(expr) == {"foo_total", "bar", "baz:recorded", "up", "qux_bucket"}


def test_the_code_exports_the_design_metric_names() -> None:
    names = exported_metric_names()
    assert {
        "creditjobs_run_last_success_timestamp_seconds",
        "creditjobs_run_last_failure_timestamp_seconds",
        "creditjobs_creditjob_last_success_timestamp_seconds",
        "creditjobs_creditjob_schedule_interval_seconds",
        "creditjobs_operator_reconcile_total",
    } <= names


def test_every_metric_the_alerts_query_is_exported_by_the_code(alert_exprs: dict[str, str]) -> None:
    exported = exported_metric_names()
    used = set()
    for name, expr in alert_exprs.items():
        names = metric_names(expr)
        assert names, f"{name}: no metric found in {expr!r}"
        unknown = names - exported - set(ALLOWED_FOREIGN_METRICS)
        assert not unknown, f"{name} queries metrics nobody exports: {sorted(unknown)}"
        used |= names
    assert "creditjobs_creditjob_last_success_timestamp_seconds" in used


def test_every_metric_the_dashboard_queries_is_exported_by_the_code(dashboard: dict[str, Any]) -> None:
    exported = exported_metric_names()
    used = set()
    for target in _targets(dashboard):
        names = metric_names(target["expr"])
        assert names, f"panel target {target['refId']}: no metric in {target['expr']!r}"
        assert not names - exported, f"dashboard queries metrics nobody exports: {sorted(names - exported)}"
        used |= names
    used |= metric_names(_label_values_selector(_variable(dashboard, "creditjob")["definition"]))
    # the dashboard shows every pushed run metric and the operator's reconcile counter
    assert run_metrics.exported_metric_names() <= used
    assert {"creditjobs_operator_reconcile_total", "creditjobs_creditjob_last_success_timestamp_seconds"} <= used


def _label_values_selector(definition: str) -> str:
    """The series selector of a Grafana `label_values(selector, label)` variable query."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition.strip())
    assert match, definition
    return match.group(1)


def _variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in dashboard["templating"]["list"] if v["name"] == name)


def test_dashboard_has_namespace_and_creditjob_variables_used_by_its_creditjob_panels(
    dashboard: dict[str, Any],
) -> None:
    for name in ("namespace", "creditjob"):
        variable = _variable(dashboard, name)
        assert variable["type"] == "query"
        assert variable["multi"] is True
        assert variable["includeAll"] is True
        assert variable["query"]["query"] == variable["definition"]
        assert metric_names(_label_values_selector(variable["definition"])) == {"creditjobs_creditjob_info"}
    # the CreditJob list follows the chosen namespaces
    assert 'namespace=~"$namespace"' in _variable(dashboard, "creditjob")["definition"]
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names.index("namespace") < names.index("creditjob")


def test_every_creditjob_query_filters_and_groups_by_namespace(dashboard: dict[str, Any]) -> None:
    """A CreditJob named alike in two namespaces is two rows or lines, never one sum."""
    checked = 0
    for target in _targets(dashboard):
        expr = target["expr"]
        if not any(name.startswith(PER_CREDITJOB_PREFIXES) for name in metric_names(expr)):
            continue
        checked += 1
        assert 'namespace=~"$namespace"' in expr, expr
        assert 'creditjob=~"$creditjob"' in expr, expr
        for grouping in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
            assert "namespace" in {label.strip() for label in grouping.split(",")}, expr
        assert "{{namespace}}" in target["legendFormat"], target
    assert checked >= 12


def test_dashboard_panels_cover_runs_success_age_failures_duration_items_credits_and_reconciles(
    dashboard: dict[str, Any],
) -> None:
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {
        "Runs per job (in range)",
        "Time since last success",
        "Failures",
        "Run duration",
        "Items per run",
        "Credits per run",
        "Reconciles by result",
        "Reconcile error ratio",
        "Failed periods owed",
    } <= titles
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "credit-jobs"


def test_every_dashboard_query_is_valid_promql(dashboard: dict[str, Any], promtool: str, tmp_path: Path) -> None:
    rules = []
    for i, target in enumerate(_targets(dashboard)):
        expr = target["expr"]
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {target['expr']!r}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
