"""The `result` label of `creditjobs_api_requests_total`: `error` is every 5xx and nothing else, since the chart's
CreditJobsApiServerErrors alert reads it as the API's server-error share."""

from __future__ import annotations

from credit_jobs.observability.api_metrics import RESULTS, result_of


def test_every_server_error_status_is_result_error() -> None:
    assert {result_of(status) for status in range(500, 600)} == {"error"}


def test_no_other_status_is_result_error() -> None:
    assert "error" not in {result_of(status) for status in range(100, 500)}


def test_every_status_maps_to_a_documented_result() -> None:
    assert {result_of(status) for status in range(100, 600)} == set(RESULTS)
