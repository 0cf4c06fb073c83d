"""The HTTP API's Prometheus metrics, served at its `/metrics` (docs/api.md, docs/monitoring.md).

`creditjobs_api_requests_total{route,result}` counts every request the API answered, by route template (bounded:
unmatched paths share `unmatched`) and result class (`RESULTS`). The chart's `CreditJobsTriggerAuthFailures` alert
reads `result="unauthorized"`; `CreditJobsApiServerErrors` reads `result="error"`, which is every 5xx and only 5xx.
Each API app builds its own registry (tests run several in one process).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

API_REQUESTS = "creditjobs_api_requests_total"
RESULTS = ("ok", "bad_request", "unauthorized", "forbidden", "not_found", "conflict", "rate_limited", "error")


def result_of(status: int) -> str:
    """The `result` label of an HTTP status."""
    named = {401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict", 429: "rate_limited"}
    if status in named:
        return named[status]
    if status >= 500:
        return "error"
    return "bad_request" if status >= 400 else "ok"


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            API_REQUESTS.removesuffix("_total"),
            "HTTP API requests answered, by route template and result.",
            ["route", "result"],
            registry=self.registry,
        )


def exported_api_metric_names() -> set[str]:
    """Every metric name the API exports, as scraped (counters with `_total`), read from a fresh registry: the chart
    tests check the alert queries against it."""
    return {family.name + ("_total" if family.type == "counter" else "") for family in ApiMetrics().registry.collect()}
