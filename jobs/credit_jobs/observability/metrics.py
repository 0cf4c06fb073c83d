"""Metrics a finished run pushes to the Pushgateway (docs/contract.md, shared names), defined once here.

Each run builds a fresh `RunMetrics` (its own CollectorRegistry), sets it from the run's result and pushes it with
the grouping key `job="credit-jobs", namespace=<ns>, creditjob=<name>, shard=<i>` (`grouping_key`; part of the
contract: the operator deletes a deleted CreditJob's groups by these labels). Pushes use POST (`pushadd`), which
replaces only the metric names sent: a failed run sends `…_last_failure_timestamp_seconds` and leaves the last
success in place.

Signals to alert on (the chart's PrometheusRule):
- `creditjobs_run_last_failure_timestamp_seconds > …_last_success_timestamp_seconds` → CreditJobFailed
- `time() - creditjobs_run_last_success_timestamp_seconds` beyond 1.5 times the interval → CreditJobNotSucceededRecently
- `creditjobs_run_items{outcome="failed"} > 0` → CreditJobItemsFailed
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Gauge

from credit_jobs.domain.contract import DEFAULT_NAMESPACE, PUSHGATEWAY_JOB

LAST_SUCCESS = "creditjobs_run_last_success_timestamp_seconds"
LAST_FAILURE = "creditjobs_run_last_failure_timestamp_seconds"
DURATION = "creditjobs_run_duration_seconds"
ITEMS = "creditjobs_run_items"
CREDITS = "creditjobs_run_credits"

PUSH_JOB = PUSHGATEWAY_JOB
ITEM_OUTCOMES = ("processed", "skipped", "failed")
CREDIT_KINDS = ("granted", "expired", "consumed")


def grouping_key(namespace: str | None, creditjob: str, shard: int) -> dict[str, str]:
    """The Pushgateway group of one CreditJob shard, besides `job`. The namespace keeps two CreditJobs of the same
    name in two namespaces apart; a run outside a cluster (no CREDITJOB_NAMESPACE) counts as `default`."""
    return {"namespace": namespace or DEFAULT_NAMESPACE, "creditjob": creditjob, "shard": str(shard)}


class RunMetrics:
    """The gauges of one run, in a registry of their own (so a push carries only this run's series)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.last_success = Gauge(
            LAST_SUCCESS,
            "Unix time the last successful run of this CreditJob shard finished.",
            registry=self.registry,
        )
        self.last_failure = Gauge(
            LAST_FAILURE,
            "Unix time the last failed run of this CreditJob shard finished.",
            registry=self.registry,
        )
        self.duration = Gauge(
            DURATION, "Wall-clock duration of the last finished run, in seconds.", registry=self.registry
        )
        self.items = Gauge(
            ITEMS,
            "Items (users, grants, files) the last run handled, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.credits = Gauge(
            CREDITS,
            "Credits the last run moved, by kind (granted, expired, consumed).",
            ["kind"],
            registry=self.registry,
        )

    def record(
        self,
        *,
        succeeded: bool,
        finished_at: float,
        duration_s: float,
        items: Mapping[str, int],
        credits: Mapping[str, int],
    ) -> None:
        """Set the gauges for a finished run.

        The timestamp that does not apply is removed from the registry: an unset gauge would push 0 and, since a
        pushadd replaces every name it carries, wipe the previous success (or failure) time.
        """
        if succeeded:
            self.last_success.set(finished_at)
            self.registry.unregister(self.last_failure)
        else:
            self.last_failure.set(finished_at)
            self.registry.unregister(self.last_success)
        self.duration.set(duration_s)
        for outcome in ITEM_OUTCOMES:
            self.items.labels(outcome=outcome).set(items.get(outcome, 0))
        for kind in CREDIT_KINDS:
            self.credits.labels(kind=kind).set(credits.get(kind, 0))


def exported_metric_names() -> set[str]:
    """Every metric name a run can push (read by the chart tests to check alert and dashboard queries)."""
    metrics = RunMetrics()
    return {metric.name for metric in metrics.registry.collect()}
