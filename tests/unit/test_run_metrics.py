"""The pushed run metrics: a failed run must not overwrite the last success time (and vice versa)."""

from __future__ import annotations

from prometheus_client import generate_latest

from credit_jobs.observability.metrics import (
    LAST_FAILURE,
    LAST_SUCCESS,
    RunMetrics,
    exported_metric_names,
)


def _exposed(metrics: RunMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_a_successful_run_carries_its_success_time_and_no_failure_time() -> None:
    metrics = RunMetrics()
    metrics.record(
        succeeded=True,
        finished_at=1000.0,
        duration_s=2.5,
        items={"processed": 7, "skipped": 1},
        credits={"granted": 700},
    )
    text = _exposed(metrics)
    assert f"{LAST_SUCCESS} 1000.0" in text
    assert LAST_FAILURE not in text
    assert 'creditjobs_run_items{outcome="processed"} 7.0' in text
    assert 'creditjobs_run_items{outcome="failed"} 0.0' in text
    assert 'creditjobs_run_credits{kind="granted"} 700.0' in text


def test_a_failed_run_carries_its_failure_time_and_no_success_time() -> None:
    metrics = RunMetrics()
    metrics.record(succeeded=False, finished_at=2000.0, duration_s=1.0, items={"failed": 3}, credits={})
    text = _exposed(metrics)
    assert f"{LAST_FAILURE} 2000.0" in text
    assert LAST_SUCCESS not in text


def test_the_exported_names_are_the_design_vocabulary() -> None:
    assert exported_metric_names() == {
        "creditjobs_run_last_success_timestamp_seconds",
        "creditjobs_run_last_failure_timestamp_seconds",
        "creditjobs_run_duration_seconds",
        "creditjobs_run_items",
        "creditjobs_run_credits",
    }
