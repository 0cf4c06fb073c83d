"""End-to-end monitoring on loopback: real `credit-jobs run` processes push to a real Pushgateway, a real operator
metrics endpoint serves the per-CreditJob series, and a real Prometheus evaluates the chart-rendered alert rules
(thresholds scaled down through chart values). The tests poll Prometheus' /api/v1/alerts.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from e2e_support import Prometheus, Server, wait_for

# The chart's rules with `for:` scaled down from minutes to seconds (the expressions are the shipped ones).
FAST_ALERTS: dict[str, dict[str, Any]] = {
    "creditJobFailed": {"for": "2s"},
    "creditJobNotSucceededRecently": {"for": "2s", "intervalFactor": 1.5},
    "creditJobItemsFailed": {"for": "2s"},
    "creditJobsOperatorDown": {"for": "5s"},
}


def _run(cli: str, database_url: str, pushgateway: Server, creditjob: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PUSHGATEWAY_URL": pushgateway.url,
        "CREDITJOB_NAME": creditjob,
        "CREDITJOB_NAMESPACE": "billing",
        "LOG_FORMAT": "json",
    }
    return subprocess.run(
        [cli, "run", "distribute-credits"], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _describe(prometheus: Prometheus) -> Any:
    return lambda: f"alerts={prometheus.alerts()}\nprometheus log:\n{prometheus.logs()}"


def test_a_failed_run_fires_credit_job_failed_and_a_successful_run_clears_it(
    credit_jobs_cli: str, database_url: str, pushgateway: Server, start_prometheus
) -> None:
    prometheus = start_prometheus(alerts=FAST_ALERTS, pushgateway=pushgateway)

    # 1. The database is unreachable: the run fails (exit 1, retryable) and pushes its failure time.
    unreachable = "postgresql+psycopg://credit_jobs:secret@127.0.0.1:1/credit_jobs?connect_timeout=2"
    failed = _run(credit_jobs_cli, unreachable, pushgateway, "e2e-distribute")
    assert failed.returncode == 1, failed.stderr
    firing = wait_for(
        "CreditJobFailed to fire",
        lambda: prometheus.firing("CreditJobFailed", creditjob="e2e-distribute"),
        describe=_describe(prometheus),
    )
    assert firing[0]["labels"]["shard"] == "0"
    assert firing[0]["labels"]["severity"] == "critical"
    assert firing[0]["annotations"]["runbook_url"].endswith("/docs/runbooks.md#creditjobfailed")

    # 2. The same CreditJob succeeds against a real database: its success time is newer, the alert clears.
    succeeded = _run(credit_jobs_cli, database_url, pushgateway, "e2e-distribute")
    assert succeeded.returncode == 0, succeeded.stderr
    wait_for(
        "CreditJobFailed to clear",
        lambda: not [a for a in prometheus.alerts() if a["labels"]["alertname"] == "CreditJobFailed"],
        describe=_describe(prometheus),
    )
    assert not prometheus.firing("CreditJobItemsFailed")


def test_a_creditjob_that_never_reports_fires_not_succeeded_recently(
    pushgateway: Server, operator_metrics, start_prometheus
) -> None:
    now = time.time()
    common = {"namespace": "billing", "usecase": "distribute-credits", "suspended": False, "active_runs": 0}
    operator = operator_metrics(
        [
            # created, never succeeded (the operator exports 0), a 4 s interval scaled down from a month
            {
                **common,
                "name": "never-ran",
                "schedule": "* * * * *",
                "last_success": 0.0,
                "created": now - 60,
                "next_schedule": now + 4,
                "interval": 4.0,
            },
            # succeeded once, 60 s ago: more than 1.5 x its 4 s interval
            {
                **common,
                "name": "late",
                "schedule": "* * * * *",
                "last_success": now - 60,
                "next_schedule": now + 4,
                "interval": 4.0,
            },
            # succeeded just now, hourly: healthy
            {
                **common,
                "name": "on-time",
                "schedule": "0 * * * *",
                "last_success": now,
                "next_schedule": now + 3600,
                "interval": 3600.0,
            },
            # never succeeded, but suspended on purpose: left to CreditJobSuspendedTooLong
            {
                **common,
                "name": "paused",
                "schedule": "* * * * *",
                "last_success": 0.0,
                "next_schedule": 0.0,
                "interval": 4.0,
                "suspended": True,
            },
        ]
    )
    prometheus = start_prometheus(alerts=FAST_ALERTS, pushgateway=pushgateway, operator=operator)

    def both_fire() -> list[dict[str, Any]] | None:
        firing = prometheus.firing("CreditJobNotSucceededRecently")
        return firing if {a["labels"]["creditjob"] for a in firing} >= {"never-ran", "late"} else None

    firing = wait_for("CreditJobNotSucceededRecently to fire", both_fire, describe=_describe(prometheus))
    reasons = {a["labels"]["creditjob"]: a["labels"]["reason"] for a in firing}
    assert reasons == {"never-ran": "never-succeeded", "late": "late"}
    # The operator target is up, so the operator alert stays quiet, with the same rules loaded.
    assert prometheus.firing("CreditJobsOperatorDown") == []
