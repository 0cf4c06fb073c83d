"""The operator's Prometheus metrics (docs/contract.md, shared names), in a registry of its own, served on /metrics.

Every series exists from the start (the process's, or the CreditJob's first pass): counters at 0, the last success at
0 when there was none, so an alert sees the first error and a CreditJob that never succeeded. The alerts are in
docs/monitoring.md; the signals they read: `observe_creditjob` (per CreditJob) and, for the operator, the share of
`creditjobs_operator_reconcile_total` with `result="error"` → CreditJobsOperatorReconcileErrors.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

REGISTRY = CollectorRegistry(auto_describe=True)

CREDITJOB_LABELS = ("creditjob", "namespace")

INFO = Gauge(
    "creditjobs_creditjob_info",
    "Always 1: one series per CreditJob, carrying its usecase, schedule and whether it is suspended.",
    ["creditjob", "namespace", "usecase", "schedule", "suspended"],
    registry=REGISTRY,
)
LAST_SUCCESS = Gauge(
    "creditjobs_creditjob_last_success_timestamp_seconds",
    "Unix time the latest child Job of the CreditJob succeeded; 0 when none ever did.",
    CREDITJOB_LABELS,
    registry=REGISTRY,
)
CREATED = Gauge(
    "creditjobs_creditjob_created_timestamp_seconds",
    "Unix time the CreditJob was created: where 'not succeeded recently' counts from while it never succeeded.",
    CREDITJOB_LABELS,
    registry=REGISTRY,
)
NEXT_SCHEDULE = Gauge(
    "creditjobs_creditjob_next_schedule_timestamp_seconds",
    "Unix time of the next fire time; 0 while suspended or invalid.",
    CREDITJOB_LABELS,
    registry=REGISTRY,
)
SCHEDULE_INTERVAL = Gauge(
    "creditjobs_creditjob_schedule_interval_seconds",
    "Seconds between the latest fire time and the next one (the interval currently in force).",
    CREDITJOB_LABELS,
    registry=REGISTRY,
)
ACTIVE_RUNS = Gauge(
    "creditjobs_creditjob_active_runs",
    "Child Jobs of the CreditJob currently running (queued catch-up Jobs excluded).",
    CREDITJOB_LABELS,
    registry=REGISTRY,
)
FAILED_PERIODS = Gauge(
    "creditjobs_failed_periods",
    "Periods of the CreditJob whose runs all failed and that no run has settled yet (status.failedPeriods): "
    "owed, whether a retry is pending, running, or no longer automatic.",
    CREDITJOB_LABELS,
    registry=REGISTRY,
)
MISSED_PERIODS = Counter(
    "creditjobs_creditjob_missed_periods",
    "Missed periods noticed by this operator process (caught up or given up), counted once per period.",
    CREDITJOB_LABELS,
    registry=REGISTRY,
)
RECONCILE_TOTAL = Counter(
    "creditjobs_operator_reconcile",
    "Reconcile passes by result: ok, invalid (spec rejected), error (API failure; retried).",
    ["result"],
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "creditjobs_operator_reconcile_duration_seconds",
    "Wall-clock time of one reconcile pass.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
PAUSED = Gauge(
    "creditjobs_operator_paused",
    "1 while this replica cannot take part in leader election (the Lease cannot be read or written): nobody acts.",
    registry=REGISTRY,
)
LEADER = Gauge(
    "creditjobs_operator_leader",
    "1 while this replica holds the leader Lease and acts, 0 while it stands by.",
    registry=REGISTRY,
)
RECONCILE_RESULTS = ("ok", "invalid", "error")
for _result in RECONCILE_RESULTS:
    RECONCILE_TOTAL.labels(result=_result)  # every result series exists from the start (rate() needs a 0)


@dataclass(frozen=True)
class CreditJobSample:
    """The values of one CreditJob's series after a reconcile pass."""

    name: str
    namespace: str
    usecase: str
    schedule: str
    suspended: bool
    last_success: float  # 0 when never
    next_schedule: float  # 0 when none
    interval: float
    active_runs: int
    created: float = 0.0  # creationTimestamp; 0 when unknown
    failed_periods: int = 0  # owed failed periods (status.failedPeriods)


_info_labels: dict[tuple[str, str], tuple[str, str, str, str, str]] = {}
_counted_missed: set[tuple[str, str, str]] = set()
_lock = threading.Lock()


def observe_creditjob(sample: CreditJobSample) -> None:
    """Set every per-CreditJob series after a reconcile pass; an info series whose labels changed is replaced, not
    duplicated.

    Signals to alert on:
    - `time() - creditjobs_creditjob_last_success_timestamp_seconds`
      `> 1.5 * creditjobs_creditjob_schedule_interval_seconds` → CreditJobNotSucceededRecently. The last-success
      series exists from the first pass with value 0 for a CreditJob that never succeeded; then
      `creditjobs_creditjob_created_timestamp_seconds` is where the 1.5 intervals count from, so "never ran" fires
      too, but a CreditJob created today is not alerted before its first period (it is taken from child Jobs, so it
      works even when no pod ever starts and nothing is pushed).
    - `creditjobs_creditjob_info{suspended="true"}` for long → CreditJobSuspendedTooLong.
    - `creditjobs_failed_periods > 0` for long → CreditJobPeriodOwed (a period whose runs all failed is owed).
    """
    ident = (sample.name, sample.namespace)
    info = (sample.name, sample.namespace, sample.usecase, sample.schedule, str(sample.suspended).lower())
    with _lock:
        old = _info_labels.get(ident)
        if old is not None and old != info:
            INFO.remove(*old)
        _info_labels[ident] = info
    INFO.labels(*info).set(1)
    LAST_SUCCESS.labels(*ident).set(sample.last_success)
    CREATED.labels(*ident).set(sample.created)
    NEXT_SCHEDULE.labels(*ident).set(sample.next_schedule)
    SCHEDULE_INTERVAL.labels(*ident).set(sample.interval)
    ACTIVE_RUNS.labels(*ident).set(sample.active_runs)
    FAILED_PERIODS.labels(*ident).set(sample.failed_periods)
    MISSED_PERIODS.labels(*ident)  # the counter exists (at 0) before anything is missed


def count_missed(name: str, namespace: str, keys: list[str]) -> int:
    """Count missed period keys not counted before by this process; returns how many were new."""
    new = 0
    with _lock:
        for key in keys:
            if (name, namespace, key) not in _counted_missed:
                _counted_missed.add((name, namespace, key))
                new += 1
    if new:
        MISSED_PERIODS.labels(name, namespace).inc(new)
    return new


def forget_creditjob(name: str, namespace: str) -> None:
    """Drop the series of a deleted CreditJob (a stale last-success series would fire alerts forever)."""
    ident = (name, namespace)
    with _lock:
        info = _info_labels.pop(ident, None)
    for gauge in (LAST_SUCCESS, CREATED, NEXT_SCHEDULE, SCHEDULE_INTERVAL, ACTIVE_RUNS, FAILED_PERIODS, MISSED_PERIODS):
        with contextlib.suppress(KeyError):
            gauge.remove(*ident)
    if info is not None:
        with contextlib.suppress(KeyError):
            INFO.remove(*info)


def exported_metric_names() -> set[str]:
    """Every metric name the operator exposes, as scraped: counters with `_total`, histograms with their
    `_bucket`/`_sum`/`_count` series (and the family name itself). `_created` series are switched off. The chart's
    alert and dashboard tests check the names they use against it."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {family.name, f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        else:
            names.add(family.name)
    return names


def serve(port: int, address: str = "0.0.0.0") -> tuple[Any, Any]:
    """Serve REGISTRY on http://address:port/metrics in a daemon thread; returns (server, thread) to stop it."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series double the series count for no alerting value
    server, thread = start_http_server(port, addr=address, registry=REGISTRY)
    return server, thread
