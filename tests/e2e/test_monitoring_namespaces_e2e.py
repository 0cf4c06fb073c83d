"""Two CreditJobs with one name in two namespaces keep apart in monitoring, end to end on loopback:
real `credit-jobs run` processes push to a real Pushgateway, and a real Prometheus evaluates the chart-rendered rules.

Before the namespace was part of the grouping key, both runs landed in one group: the later push decided whether
prod's critical CreditJobFailed fired for a staging failure, or hid it.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from e2e_support import Prometheus, Server, group_keys, pushgateway_groups, wait_for

FAST_ALERTS: dict[str, dict[str, Any]] = {"creditJobFailed": {"for": "2s"}}
UNREACHABLE = "postgresql+psycopg://credit_jobs:secret@127.0.0.1:1/credit_jobs?connect_timeout=2"
JOB = "credit-jobs"


def _run(cli: str, database_url: str, pushgateway: Server, creditjob: str, namespace: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITJOB")}
    env.update(DATABASE_URL=database_url, PUSHGATEWAY_URL=pushgateway.url, CREDITJOB_NAME=creditjob, LOG_FORMAT="json")
    if namespace is not None:
        env["CREDITJOB_NAMESPACE"] = namespace
    done = subprocess.run(
        [cli, "run", "distribute-credits"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    return done.returncode


def _metric_names(pushgateway: Server, namespace: str, creditjob: str) -> set[str]:
    (group,) = [
        g
        for g in pushgateway_groups(pushgateway.url)
        if g["labels"].get("namespace") == namespace and g["labels"].get("creditjob") == creditjob
    ]
    return {name for name in group if name.startswith("creditjobs_run_last_")}


def test_one_name_in_two_namespaces_keeps_two_groups_and_only_the_failing_namespace_alerts(
    credit_jobs_cli: str, database_url: str, pushgateway: Server, start_prometheus
) -> None:
    # prod succeeds, then staging's CreditJob of the same name fails (the order that used to fire prod's alert)
    assert _run(credit_jobs_cli, database_url, pushgateway, "monthly", "prod") == 0
    assert _run(credit_jobs_cli, UNREACHABLE, pushgateway, "monthly", "staging") == 1
    # a run outside a cluster (no CREDITJOB_NAMESPACE) is grouped under the documented default namespace
    assert _run(credit_jobs_cli, database_url, pushgateway, "local", None) == 0

    assert group_keys(pushgateway.url) == {
        (JOB, "prod", "monthly", "0"),
        (JOB, "staging", "monthly", "0"),
        (JOB, "default", "local", "0"),
    }
    assert _metric_names(pushgateway, "prod", "monthly") == {"creditjobs_run_last_success_timestamp_seconds"}
    assert _metric_names(pushgateway, "staging", "monthly") == {"creditjobs_run_last_failure_timestamp_seconds"}

    prometheus: Prometheus = start_prometheus(alerts=FAST_ALERTS, pushgateway=pushgateway)
    firing = wait_for(
        "CreditJobFailed for staging",
        lambda: prometheus.firing("CreditJobFailed", namespace="staging", creditjob="monthly"),
        describe=lambda: f"alerts={prometheus.alerts()}",
    )
    assert firing[0]["annotations"]["description"].startswith("The last run of CreditJob staging/monthly (shard 0)")
    # Every CreditJobFailed alert (pending or firing) is staging's: prod's success is its own group.
    assert {
        a["labels"].get("namespace") for a in prometheus.alerts() if a["labels"]["alertname"] == "CreditJobFailed"
    } == {"staging"}
