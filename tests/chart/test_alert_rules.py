"""The alert rules, extracted from the rendered PrometheusRule, pass `promtool check rules` and `promtool test rules`.

Every alert has a case where it fires and a healthy case where it stays silent, and each `for:` is tested on
both sides (still pending just before, firing just after). The rules are rendered with the thresholds below
(ALERT_SETTINGS, the chart defaults), so the timings in the cases follow from them. promtool evaluates from
Unix time 0, so timestamps in the series are seconds since the start of the test.

Every alert carries `namespace`: cases with one CreditJob name in two namespaces prove that only the
failing namespace alerts, and cases with two releases' operators that one live operator does not hide another's
outage (the rules are rendered for the release `credit-jobs` in namespace `billing`).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import ENVIRONMENTS, REPO, env_values, monitoring_values, of_kind, rule_groups

RUNBOOKS = REPO / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/credit-jobs/credit-jobs/blob/main/docs/runbooks.md"
# docs/contract.md's alert list (CreditJobsTriggerAuthFailures and CreditJobsApiServerErrors: the HTTP API's
# creditjobs_api_requests_total).
EXPECTED_ALERTS = {
    "CreditJobsTriggerAuthFailures",
    "CreditJobsApiServerErrors",
    "CreditJobFailed",
    "CreditJobNotSucceededRecently",
    "CreditJobRunningTooLong",
    "CreditJobSuspendedTooLong",
    "CreditJobItemsFailed",
    "CreditJobsOperatorDown",
    "CreditJobsOperatorReconcileErrors",
    "CreditJobPeriodOwed",
}
ALERT_SETTINGS: dict[str, dict[str, Any]] = {
    "creditJobFailed": {"for": "10m", "severity": "critical"},
    "creditJobNotSucceededRecently": {"for": "15m", "severity": "critical", "intervalFactor": 1.5},
    "creditJobRunningTooLong": {"for": "2h", "severity": "warning"},
    "creditJobSuspendedTooLong": {"for": "24h", "severity": "info"},
    "creditJobItemsFailed": {"for": "5m", "severity": "warning", "threshold": 0},
    "creditJobPeriodOwed": {"for": "30m", "severity": "warning"},
    "creditJobsOperatorDown": {"for": "5m", "severity": "critical"},
    "creditJobsOperatorReconcileErrors": {"for": "15m", "severity": "warning", "window": "10m", "ratio": 0.05},
    "creditJobsTriggerAuthFailures": {"for": "10m", "severity": "warning", "window": "5m", "perSecond": 0.1},
    "creditJobsApiServerErrors": {"for": "10m", "severity": "warning", "window": "5m", "ratio": 0.05},
}
OPERATOR_JOB = "credit-jobs-operator"  # the operator Service name = the ServiceMonitor's job label
RUN = 'job="credit-jobs", namespace="billing", creditjob="distribute-credits", shard="0"'
RUN_SHARD_1 = 'job="credit-jobs", namespace="billing", creditjob="distribute-credits", shard="1"'
RUN_STAGING = 'job="credit-jobs", namespace="staging", creditjob="distribute-credits", shard="0"'
CJ = 'namespace="billing", creditjob="distribute-credits"'
CJ_STAGING = 'namespace="staging", creditjob="distribute-credits"'
OPERATOR_UP = f'up{{job="{OPERATOR_JOB}", namespace="billing", instance="10.0.0.1:9090"}}'
RECONCILE = f'job="{OPERATOR_JOB}", namespace="billing", instance="a"'
RECONCILE_STAGING = f'job="{OPERATOR_JOB}", namespace="staging", instance="b"'
OTHER_RELEASE_UP = f'up{{job="{OPERATOR_JOB}", namespace="staging", instance="10.0.1.1:9090"}}'
INFO = 'creditjobs_creditjob_info{{{cj}, usecase="distribute-credits", schedule="{schedule}", suspended="{suspended}"}}'
INFO_HOURLY_SUSPENDED = INFO.format(cj=CJ, schedule="0 * * * *", suspended="true")
INFO_HOURLY_ACTIVE = INFO.format(cj=CJ, schedule="0 * * * *", suspended="false")
INFO_MONTHLY_SUSPENDED = INFO.format(cj=CJ, schedule="0 0 1 * *", suspended="true")
INFO_MONTHLY_ACTIVE = INFO.format(cj=CJ, schedule="0 0 1 * *", suspended="false")
SUMMARY = {
    "CreditJobFailed": "A credit job run failed and no run has succeeded since.",
    "CreditJobItemsFailed": "A credit job run reported failed items.",
    "CreditJobNotSucceededRecently": "A credit job has not succeeded within its schedule.",
    "CreditJobRunningTooLong": "A credit job run has been running for too long.",
    "CreditJobSuspendedTooLong": "A credit job has been suspended for a long time.",
    "CreditJobsOperatorDown": "The credit-jobs operator is down.",
    "CreditJobsOperatorReconcileErrors": "The credit-jobs operator fails to reconcile CreditJobs.",
    "CreditJobPeriodOwed": "A credit job owes periods whose runs all failed.",
    "CreditJobsTriggerAuthFailures": "Requests to the credit-jobs API keep failing authentication.",
    "CreditJobsApiServerErrors": "The credit-jobs API answers requests with server errors.",
}
API = 'job="credit-jobs-api", namespace="billing", instance="a", route="/api/v1/runs"'
API_STAGING = 'job="credit-jobs-api", namespace="staging", instance="b", route="/api/v1/runs"'
API_CONSUME = 'job="credit-jobs-api", namespace="billing", instance="a", route="/api/v1/users/{user}/consume"'
API_CONSUME_2 = 'job="credit-jobs-api", namespace="billing", instance="b", route="/api/v1/users/{user}/consume"'
API_CONSUME_STAGING = 'job="credit-jobs-api", namespace="staging", instance="c", route="/api/v1/users/{user}/consume"'
API_READYZ = 'job="credit-jobs-api", namespace="billing", instance="a", route="/readyz"'
API_HEALTHZ = 'job="credit-jobs-api", namespace="billing", instance="a", route="/healthz"'


@dataclass
class Firing:
    labels: dict[str, str]
    description: str


@dataclass
class Case:
    """One promtool test: input series, then evaluations that expect silence or the given alerts."""

    alert: str
    series: dict[str, str]
    silent_at: list[str] = field(default_factory=list)
    firing_at: dict[str, list[Firing]] = field(default_factory=dict)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-alert overrides of ALERT_SETTINGS


OPERATOR_DOWN = Firing(
    {"severity": "critical", "namespace": "billing", "job": OPERATOR_JOB},
    f"No target of scrape job {OPERATOR_JOB} in namespace billing has been up for 5m; its CreditJobs are not "
    "reconciled, run-now and catch-up do nothing.",
)


def _failed(
    creditjob: str = "distribute-credits",
    shard: str = "0",
    at: str = "1970-01-01 00:05:00 +0000 UTC",
    namespace: str = "billing",
) -> Firing:
    return Firing(
        {"severity": "critical", "namespace": namespace, "creditjob": creditjob, "shard": shard},
        f"The last run of CreditJob {namespace}/{creditjob} (shard {shard}) failed at {at} and no later run succeeded.",
    )


def _owed(count: int, namespace: str = "billing") -> Firing:
    return Firing(
        {"severity": "warning", "namespace": namespace, "creditjob": "distribute-credits"},
        f"CreditJob {namespace}/distribute-credits owes {count} failed period(s) (status.failedPeriods) "
        "for more than 30m.",
    )


CASES: dict[str, Case] = {
    # --- CreditJobFailed (for 10m) ---
    "failed-after-a-success-fires-once-the-for-has-passed": Case(
        "CreditJobFailed",
        {
            f"creditjobs_run_last_success_timestamp_seconds{{{RUN}}}": "60x40",
            f"creditjobs_run_last_failure_timestamp_seconds{{{RUN}}}": "_x5 300x35",  # pushed at 5m
        },
        silent_at=["4m", "14m"],
        firing_at={"16m": [_failed()], "30m": [_failed()]},
    ),
    "failed-and-never-succeeded-fires": Case(
        "CreditJobFailed",
        {f"creditjobs_run_last_failure_timestamp_seconds{{{RUN}}}": "_x5 300x35"},
        silent_at=["14m"],
        firing_at={"16m": [_failed()]},
    ),
    "failure-followed-by-a-success-clears": Case(
        "CreditJobFailed",
        {
            f"creditjobs_run_last_failure_timestamp_seconds{{{RUN}}}": "_x5 300x55",
            f"creditjobs_run_last_success_timestamp_seconds{{{RUN}}}": "60x19 1200x40",  # retry succeeded at 20m
        },
        firing_at={"18m": [_failed()]},
        silent_at=["21m", "50m"],
    ),
    "healthy-successes-only-stay-silent": Case(
        "CreditJobFailed",
        {f"creditjobs_run_last_success_timestamp_seconds{{{RUN}}}": "60+60x60"},
        silent_at=["30m", "60m"],
    ),
    "only-the-failing-shard-fires": Case(
        "CreditJobFailed",
        {
            f"creditjobs_run_last_failure_timestamp_seconds{{{RUN}}}": "300x40",
            f"creditjobs_run_last_success_timestamp_seconds{{{RUN_SHARD_1}}}": "400x40",
        },
        firing_at={"20m": [_failed()]},
    ),
    "one-name-in-two-namespaces-only-the-failing-namespace-fires": Case(
        "CreditJobFailed",
        {
            # billing failed at 5m after a success; staging's CreditJob of the same name succeeded later, at 6m
            f"creditjobs_run_last_success_timestamp_seconds{{{RUN}}}": "60x40",
            f"creditjobs_run_last_failure_timestamp_seconds{{{RUN}}}": "_x5 300x35",
            f"creditjobs_run_last_success_timestamp_seconds{{{RUN_STAGING}}}": "_x6 360x34",
        },
        silent_at=["14m"],
        firing_at={"16m": [_failed()], "30m": [_failed()]},
    ),
    "one-name-in-two-namespaces-a-healthy-namespace-stays-silent-next-to-a-failing-one": Case(
        "CreditJobFailed",
        {
            f"creditjobs_run_last_success_timestamp_seconds{{{RUN}}}": "360x40",
            f"creditjobs_run_last_failure_timestamp_seconds{{{RUN_STAGING}}}": "300x40",
        },
        firing_at={"20m": [_failed(namespace="staging", at="1970-01-01 00:05:00 +0000 UTC")]},
    ),
    # --- CreditJobItemsFailed (for 5m, threshold 0) ---
    "failed-items-fire-after-the-for": Case(
        "CreditJobItemsFailed",
        {
            f'creditjobs_run_items{{{RUN}, outcome="failed"}}': "3x20",
            f'creditjobs_run_items{{{RUN}, outcome="processed"}}': "997x20",
        },
        silent_at=["4m"],
        firing_at={
            "6m": [
                Firing(
                    {"severity": "warning", "namespace": "billing", "creditjob": "distribute-credits", "shard": "0"},
                    "The last run of CreditJob billing/distribute-credits (shard 0) failed on 3 items.",
                )
            ]
        },
    ),
    "no-failed-items-stay-silent": Case(
        "CreditJobItemsFailed",
        {
            f'creditjobs_run_items{{{RUN}, outcome="failed"}}': "0x20",
            f'creditjobs_run_items{{{RUN}, outcome="processed"}}': "1000x20",
        },
        silent_at=["10m", "20m"],
    ),
    "failed-items-under-a-raised-threshold-stay-silent": Case(
        "CreditJobItemsFailed",
        {f'creditjobs_run_items{{{RUN}, outcome="failed"}}': "3x20"},
        silent_at=["10m", "20m"],
        values={"creditJobItemsFailed": {"threshold": 10}},
    ),
    # --- CreditJobNotSucceededRecently (interval 1h, 1.5 intervals = 90m, for 15m) ---
    "late-success-fires-after-one-and-a-half-intervals-plus-the-for": Case(
        "CreditJobNotSucceededRecently",
        {
            f"creditjobs_creditjob_last_success_timestamp_seconds{{{CJ}}}": "60x150",
            f"creditjobs_creditjob_schedule_interval_seconds{{{CJ}}}": "3600x150",
            INFO_HOURLY_ACTIVE: "1x150",
        },
        # late from 91m on (time() - 60 > 5400): pending until 91m + 15m
        silent_at=["80m", "100m"],
        firing_at={
            "110m": [
                Firing(
                    {
                        "severity": "critical",
                        "reason": "late",
                        "namespace": "billing",
                        "creditjob": "distribute-credits",
                    },
                    "CreditJob billing/distribute-credits last succeeded 1h 49m 0s ago,"
                    " more than 1.5 times its schedule interval.",
                )
            ]
        },
    ),
    "never-succeeded-fires-after-the-for": Case(
        "CreditJobNotSucceededRecently",
        {
            # created at 0, never succeeded, a 10-minute interval: overdue after 15 minutes, firing after the for
            f"creditjobs_creditjob_last_success_timestamp_seconds{{{CJ}}}": "0x60",
            f"creditjobs_creditjob_created_timestamp_seconds{{{CJ}}}": "0x60",
            f"creditjobs_creditjob_schedule_interval_seconds{{{CJ}}}": "600x60",
            INFO_HOURLY_ACTIVE: "1x60",
        },
        silent_at=["29m"],
        firing_at={
            "32m": [
                Firing(
                    {
                        "severity": "critical",
                        "reason": "never-succeeded",
                        "namespace": "billing",
                        "creditjob": "distribute-credits",
                    },
                    "CreditJob billing/distribute-credits has never succeeded.",
                )
            ]
        },
    ),
    "a-new-creditjob-is-not-alerted-before-its-first-interval": Case(
        "CreditJobNotSucceededRecently",
        {
            # created at 0 with an hourly schedule, no success yet: not overdue before 90 minutes
            f"creditjobs_creditjob_last_success_timestamp_seconds{{{CJ}}}": "0x100",
            f"creditjobs_creditjob_created_timestamp_seconds{{{CJ}}}": "0x100",
            f"creditjobs_creditjob_schedule_interval_seconds{{{CJ}}}": "3600x100",
            INFO_HOURLY_ACTIVE: "1x100",
        },
        silent_at=["30m", "80m"],
    ),
    "regular-successes-stay-silent": Case(
        "CreditJobNotSucceededRecently",
        {
            # succeeds every hour on the hour (the value is the finish time)
            f"creditjobs_creditjob_last_success_timestamp_seconds{{{CJ}}}": "60x59 3660x59 7260x59 10860x59",
            f"creditjobs_creditjob_schedule_interval_seconds{{{CJ}}}": "3600x240",
        },
        silent_at=["80m", "150m", "230m"],
    ),
    "a-suspended-creditjob-is-left-to-suspended-too-long": Case(
        "CreditJobNotSucceededRecently",
        {
            f"creditjobs_creditjob_last_success_timestamp_seconds{{{CJ}}}": "0x60",
            f"creditjobs_creditjob_schedule_interval_seconds{{{CJ}}}": "3600x60",
            INFO_HOURLY_SUSPENDED: "1x60",
        },
        silent_at=["30m", "60m"],
    ),
    # --- CreditJobRunningTooLong (for 2h) ---
    "a-run-active-for-over-two-hours-fires": Case(
        "CreditJobRunningTooLong",
        {f"creditjobs_creditjob_active_runs{{{CJ}}}": "1x150"},
        silent_at=["119m"],
        firing_at={
            "121m": [
                Firing(
                    {"severity": "warning", "namespace": "billing", "creditjob": "distribute-credits"},
                    "CreditJob billing/distribute-credits has had 1 active run(s) for more than 2h.",
                )
            ]
        },
    ),
    "runs-that-finish-stay-silent": Case(
        "CreditJobRunningTooLong",
        {f"creditjobs_creditjob_active_runs{{{CJ}}}": "1x30 0x30 1x30 0x30 1x30"},
        silent_at=["60m", "121m", "150m"],
    ),
    # --- CreditJobSuspendedTooLong (for 24h) ---
    "suspended-for-over-a-day-fires": Case(
        "CreditJobSuspendedTooLong",
        {INFO_MONTHLY_SUSPENDED: "1x1600"},
        silent_at=["23h"],
        firing_at={
            "25h": [
                Firing(
                    {"severity": "info", "namespace": "billing", "creditjob": "distribute-credits"},
                    "CreditJob billing/distribute-credits has been suspended for more than 24h.",
                )
            ]
        },
    ),
    "an-active-creditjob-stays-silent": Case(
        "CreditJobSuspendedTooLong",
        {INFO_MONTHLY_ACTIVE: "1x1600"},
        silent_at=["25h", "29h"],
    ),
    # --- CreditJobsOperatorDown (for 5m) ---
    "operator-target-down-fires": Case(
        "CreditJobsOperatorDown",
        {OPERATOR_UP: "0x20"},
        silent_at=["4m"],
        firing_at={"6m": [OPERATOR_DOWN]},
    ),
    "operator-never-scraped-fires": Case(
        "CreditJobsOperatorDown",
        {'up{job="some-other-app", namespace="billing", instance="10.0.0.9:8080"}': "1x20"},
        silent_at=["4m"],
        firing_at={"6m": [OPERATOR_DOWN]},
    ),
    "one-replica-up-is-enough": Case(
        "CreditJobsOperatorDown",
        {
            OPERATOR_UP: "1x20",
            f'up{{job="{OPERATOR_JOB}", namespace="billing", instance="10.0.0.2:9090"}}': "0x20",
        },
        silent_at=["10m", "20m"],
    ),
    "another-releases-live-operator-does-not-hide-this-releases-outage": Case(
        "CreditJobsOperatorDown",
        # two releases named alike in two namespaces (one scrape job name): billing's operator is down
        {OPERATOR_UP: "0x20", OTHER_RELEASE_UP: "1x20"},
        silent_at=["4m"],
        firing_at={"6m": [OPERATOR_DOWN], "15m": [OPERATOR_DOWN]},
    ),
    "another-releases-outage-is-not-this-releases-alert": Case(
        "CreditJobsOperatorDown",
        {OPERATOR_UP: "1x20", OTHER_RELEASE_UP: "0x20"},
        silent_at=["6m", "15m"],
    ),
    # --- CreditJobsOperatorReconcileErrors (ratio over 10m > 5 %, for 15m) ---
    "many-failing-reconciles-fire-after-the-for": Case(
        "CreditJobsOperatorReconcileErrors",
        {
            f'creditjobs_operator_reconcile_total{{{RECONCILE}, result="ok"}}': "0+10x60",
            f'creditjobs_operator_reconcile_total{{{RECONCILE}, result="error"}}': "0+2x60",
            # another release's operator, all fine: its reconciles do not dilute billing's error ratio
            f'creditjobs_operator_reconcile_total{{{RECONCILE_STAGING}, result="ok"}}': "0+1000x60",
        },
        silent_at=["15m"],
        firing_at={
            "18m": [
                Firing(
                    {"severity": "warning", "namespace": "billing", "job": OPERATOR_JOB},
                    f"16.67% of the reconciles of billing/{OPERATOR_JOB} failed over the last 10m.",
                )
            ]
        },
    ),
    "rare-reconcile-errors-stay-silent": Case(
        "CreditJobsOperatorReconcileErrors",
        {
            f'creditjobs_operator_reconcile_total{{{RECONCILE}, result="ok"}}': "0+100x60",
            f'creditjobs_operator_reconcile_total{{{RECONCILE}, result="error"}}': "0+1x60",
        },
        silent_at=["20m", "60m"],
    ),
    "no-reconcile-errors-stay-silent": Case(
        "CreditJobsOperatorReconcileErrors",
        {
            f'creditjobs_operator_reconcile_total{{{RECONCILE}, result="ok"}}': "0+10x60",
            # another release's failing operator is its own release's alert
            f'creditjobs_operator_reconcile_total{{{RECONCILE_STAGING}, result="ok"}}': "0+10x60",
            f'creditjobs_operator_reconcile_total{{{RECONCILE_STAGING}, result="error"}}': "0+10x60",
        },
        silent_at=["20m", "60m"],
    ),
    # --- CreditJobPeriodOwed (for 30m) ---
    "a-period-owed-for-over-the-for-fires": Case(
        "CreditJobPeriodOwed",
        {f"creditjobs_failed_periods{{{CJ}}}": "0x5 1x60 2x60"},
        silent_at=["4m", "34m"],
        firing_at={"36m": [_owed(1)], "70m": [_owed(2)]},
    ),
    "a-period-retried-successfully-within-the-for-stays-silent": Case(
        "CreditJobPeriodOwed",
        {f"creditjobs_failed_periods{{{CJ}}}": "0x5 1x20 0x60"},
        silent_at=["20m", "36m", "60m"],
    ),
    "one-name-in-two-namespaces-only-the-owing-namespace-fires": Case(
        "CreditJobPeriodOwed",
        {f"creditjobs_failed_periods{{{CJ}}}": "0x60", f"creditjobs_failed_periods{{{CJ_STAGING}}}": "1x60"},
        silent_at=["29m"],
        firing_at={"31m": [_owed(1, namespace="staging")]},
    ),
    # --- CreditJobsTriggerAuthFailures (window 5m, over 0.1/s, for 10m) ---
    "auth-failures-at-one-per-second-fire-after-the-for": Case(
        "CreditJobsTriggerAuthFailures",
        {
            f'creditjobs_api_requests_total{{{API}, result="unauthorized"}}': "0+60x60",
            f'creditjobs_api_requests_total{{{API}, result="ok"}}': "0+600x60",
        },
        silent_at=["9m"],
        firing_at={
            "13m": [
                Firing(
                    {"severity": "warning", "namespace": "billing", "job": "credit-jobs-api"},
                    "1 requests per second to billing/credit-jobs-api failed authentication over the last 5m.",
                )
            ]
        },
    ),
    "another-releases-api-auth-failures-are-its-own-alert": Case(
        "CreditJobsTriggerAuthFailures",
        {f'creditjobs_api_requests_total{{{API_STAGING}, result="unauthorized"}}': "0+60x60"},
        silent_at=["13m", "30m"],
    ),
    "a-few-auth-failures-stay-silent": Case(
        "CreditJobsTriggerAuthFailures",
        {
            f'creditjobs_api_requests_total{{{API}, result="unauthorized"}}': "0+3x60",
            f'creditjobs_api_requests_total{{{API}, result="ok"}}': "0+600x60",
        },
        silent_at=["20m", "60m"],
    ),
    # --- CreditJobsApiServerErrors (window 5m, over 5 % of requests, for 10m; probes and scrapes left out) ---
    "api-server-errors-at-ten-percent-fire-after-the-for": Case(
        "CreditJobsApiServerErrors",
        {  # two replicas: 60 of 600 requests a minute are 5xx (10 %); the probes' 200s must not dilute it
            f'creditjobs_api_requests_total{{{API_CONSUME}, result="error"}}': "0+40x60",
            f'creditjobs_api_requests_total{{{API_CONSUME}, result="ok"}}': "0+260x60",
            f'creditjobs_api_requests_total{{{API_CONSUME_2}, result="error"}}': "0+20x60",
            f'creditjobs_api_requests_total{{{API_CONSUME_2}, result="conflict"}}': "0+280x60",
            f'creditjobs_api_requests_total{{{API_HEALTHZ}, result="ok"}}': "0+6000x60",
        },
        silent_at=["9m"],
        firing_at={
            "13m": [
                Firing(
                    {"severity": "warning", "namespace": "billing", "job": "credit-jobs-api"},
                    "10% of the requests to billing/credit-jobs-api were answered with a server error (5xx) over "
                    "the last 5m.",
                )
            ]
        },
    ),
    "a-burst-of-server-errors-shorter-than-the-for-stays-silent": Case(
        "CreditJobsApiServerErrors",
        {  # every request failed for 5 minutes (a database restart), then none
            f'creditjobs_api_requests_total{{{API_CONSUME}, result="error"}}': "0+60x5 300+0x55",
            f'creditjobs_api_requests_total{{{API_CONSUME}, result="ok"}}': "0+0x5 0+60x55",
        },
        silent_at=["3m", "8m", "14m", "30m"],
    ),
    "a-few-server-errors-stay-silent": Case(
        "CreditJobsApiServerErrors",
        {  # 1 in 600 (0.17 %)
            f'creditjobs_api_requests_total{{{API_CONSUME}, result="error"}}': "0+1x60",
            f'creditjobs_api_requests_total{{{API_CONSUME}, result="ok"}}': "0+599x60",
        },
        silent_at=["20m", "60m"],
    ),
    "another-releases-api-server-errors-are-its-own-alert": Case(
        "CreditJobsApiServerErrors",
        {
            f'creditjobs_api_requests_total{{{API_CONSUME_STAGING}, result="error"}}': "0+60x60",
            f'creditjobs_api_requests_total{{{API_CONSUME}, result="ok"}}': "0+600x60",
        },
        silent_at=["13m", "30m"],
    ),
    "a-not-ready-probe-alone-does-not-fire-the-api-alert": Case(
        "CreditJobsApiServerErrors",
        {  # an idle API whose database is down: /readyz answers 503, which takes the pod out of the Service
            f'creditjobs_api_requests_total{{{API_READYZ}, result="error"}}': "0+6x60",
        },
        silent_at=["13m", "30m"],
    ),
}


def _values(overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    alerts = {name: {"enabled": True, **settings} for name, settings in ALERT_SETTINGS.items()}
    for name, override in (overrides or {}).items():
        alerts[name] = {**alerts[name], **override}
    return monitoring_values(**alerts)


def _write_rules(render, directory: Path, values: dict[str, Any]) -> Path:
    path = directory / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule_groups(render(values))}, sort_keys=False))
    return path


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)


def _alert_rules(render, values: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in rule_groups(render(values)) for rule in group["rules"] if "alert" in rule]


# --- promtool check rules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ["defaults", *ENVIRONMENTS])
def test_rendered_rules_pass_promtool_check(render, promtool: str, tmp_path: Path, env: str) -> None:
    values = _values() if env == "defaults" else env_values(env)
    if env == "dev":  # dev ships without alerting; check its rules anyway
        values = {**values, "prometheusRule": {"enabled": True}}
    result = _promtool(promtool, "check", "rules", str(_write_rules(render, tmp_path, values)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_catches_a_broken_expression_so_the_check_is_live(promtool: str, tmp_path: Path) -> None:
    rules = tmp_path / "broken.yml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"alert": "X", "expr": "rate(up[5m]"}]}]}))
    assert _promtool(promtool, "check", "rules", str(rules)).returncode != 0


# --- the rule set itself -------------------------------------------------------------------------------------------


def test_the_chart_ships_exactly_the_design_alerts(render) -> None:
    assert {rule["alert"] for rule in _alert_rules(render, _values())} == EXPECTED_ALERTS


def test_every_alert_has_severity_summary_description_and_a_runbook_section(render) -> None:
    anchors = _runbook_anchors()
    for rule in _alert_rules(render, _values()):
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"] == SUMMARY[rule["alert"]]
        assert rule["annotations"]["description"]
        url = rule["annotations"]["runbook_url"]
        base, anchor = url.split("#")
        assert base == RUNBOOK_BASE
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in docs/runbooks.md"


def _runbook_anchors() -> set[str]:
    """GitHub's heading anchors of docs/runbooks.md (lower case, punctuation dropped, spaces → dashes)."""
    anchors = set()
    for line in RUNBOOKS.read_text().splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def test_the_operator_alerts_are_scoped_to_the_release_that_renders_them(chart) -> None:
    """Each release's rules select its own operator (scrape job and namespace), so one live operator cannot hide
    another release's outage; the ServiceMonitor honours the series' own `namespace` (the CreditJob's)."""
    rendered = chart.render(_values(), name="payments", namespace="staging")
    objects = [
        doc for path, text in rendered.items() if path.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc
    ]
    rules = {rule["alert"]: rule for group in rule_groups(objects) for rule in group["rules"]}
    job = "payments-credit-jobs-operator"
    down = rules["CreditJobsOperatorDown"]
    assert down["expr"] == f'absent(up{{job="{job}", namespace="staging"}} == 1)'
    assert down["labels"] == {"severity": "critical", "namespace": "staging", "job": job}
    assert rules["CreditJobsOperatorReconcileErrors"]["expr"].count(f'job="{job}", namespace="staging"') == 2
    for api_alert in ("CreditJobsTriggerAuthFailures", "CreditJobsApiServerErrors"):
        expr = rules[api_alert]["expr"]
        assert expr.count('namespace="staging"') == expr.count("creditjobs_api_requests_total") >= 1, api_alert
    (monitor,) = [
        obj
        for obj in objects
        if obj["kind"] == "ServiceMonitor" and obj["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]
    assert [endpoint["honorLabels"] for endpoint in monitor["spec"]["endpoints"]] == [True]


def test_every_creditjob_alert_groups_by_namespace(render) -> None:
    for rule in _alert_rules(render, _values()):
        if rule["alert"].startswith("CreditJobs"):
            continue  # the operator alerts: scoped to the release above
        groupings = re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", rule["expr"])
        assert groupings, rule["alert"]
        for grouping in groupings:
            assert "namespace" in {label.strip() for label in grouping.split(",")}, (rule["alert"], rule["expr"])
        assert "{{ $labels.namespace }}/{{ $labels.creditjob }}" in rule["annotations"]["description"], rule["alert"]


def test_thresholds_severities_and_switches_come_from_values(render) -> None:
    values = _values(
        {
            "creditJobFailed": {"for": "3m", "severity": "warning"},
            "creditJobSuspendedTooLong": {"enabled": False},
            "creditJobsOperatorReconcileErrors": {"ratio": 0.2},
        }
    )
    rules = {rule["alert"]: rule for rule in _alert_rules(render, values)}
    assert "CreditJobSuspendedTooLong" not in rules
    assert rules["CreditJobFailed"]["for"] == "3m"
    assert rules["CreditJobFailed"]["labels"]["severity"] == "warning"


def test_default_values_enable_every_alert_with_the_tested_settings(chart) -> None:
    defaults = chart.merge_values({})["prometheusRule"]["alerts"]
    for name, settings in ALERT_SETTINGS.items():
        assert defaults[name]["enabled"] is True
        assert {key: defaults[name][key] for key in settings} == settings


# --- promtool test rules: a firing and a silent case for every alert ------------------------------------------------


def _promtool_test(case: Case, rules_file: str) -> dict[str, Any]:
    evaluations: list[dict[str, Any]] = [
        {"eval_time": at, "alertname": case.alert, "exp_alerts": []} for at in case.silent_at
    ]
    for at, firings in case.firing_at.items():
        evaluations.append(
            {
                "eval_time": at,
                "alertname": case.alert,
                "exp_alerts": [
                    {
                        "exp_labels": firing.labels,
                        "exp_annotations": {
                            "summary": SUMMARY[case.alert],
                            "description": firing.description,
                            "runbook_url": f"{RUNBOOK_BASE}#{case.alert.lower()}",
                        },
                    }
                    for firing in firings
                ],
            }
        )
    return {
        "rule_files": [rules_file],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": series, "values": values} for series, values in case.series.items()],
                "alert_rule_test": evaluations,
            }
        ],
    }


@pytest.mark.parametrize("name", CASES)
def test_promtool_rule_case(render, promtool: str, tmp_path: Path, name: str) -> None:
    case = CASES[name]
    rules = _write_rules(render, tmp_path, _values(case.values))
    test_file = tmp_path / "test.yml"
    test_file.write_text(yaml.safe_dump(_promtool_test(case, rules.name), sort_keys=False))
    result = _promtool(promtool, "test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_fails_on_a_wrong_expectation_so_the_cases_are_live(
    render, promtool: str, tmp_path: Path
) -> None:
    case = CASES["never-succeeded-fires-after-the-for"]
    wrong = Case(case.alert, case.series, silent_at=["32m"])  # it does fire at 32m
    rules = _write_rules(render, tmp_path, _values())
    test_file = tmp_path / "test.yml"
    test_file.write_text(yaml.safe_dump(_promtool_test(wrong, rules.name), sort_keys=False))
    assert _promtool(promtool, "test", "rules", str(test_file)).returncode != 0


def test_every_alert_has_a_firing_case_a_healthy_case_and_both_sides_of_its_for() -> None:
    for alert in EXPECTED_ALERTS:
        cases = [case for case in CASES.values() if case.alert == alert]
        assert any(case.firing_at for case in cases), f"{alert}: no firing case"
        assert any(not case.firing_at and case.silent_at for case in cases), f"{alert}: no healthy case"
        assert any(
            case.firing_at
            and case.silent_at
            and min(map(_minutes, case.silent_at)) < min(map(_minutes, case.firing_at))
            for case in cases
        ), f"{alert}: no case that is still pending before its for: elapses"


def _minutes(duration: str) -> int:
    number, unit = int(duration[:-1]), duration[-1]
    return number * {"m": 1, "h": 60}[unit]


def test_the_api_alerts_come_with_the_api_and_its_servicemonitor(render) -> None:
    """Before, both API alerts were rendered with the API off, and no render scraped the API: they could never fire."""
    without_api = {**_values(), "api": {"enabled": False}}
    assert {rule["alert"] for rule in _alert_rules(render, without_api)} == EXPECTED_ALERTS - {
        "CreditJobsTriggerAuthFailures",
        "CreditJobsApiServerErrors",
    }
    assert [
        m["metadata"]["labels"]["app.kubernetes.io/component"] for m in of_kind(render(without_api), "ServiceMonitor")
    ] == ["operator"]
    objects = render(_values())
    (api_monitor,) = [
        m for m in of_kind(objects, "ServiceMonitor") if m["metadata"]["labels"]["app.kubernetes.io/component"] == "api"
    ]
    (api_service,) = [
        s for s in of_kind(objects, "Service") if s["metadata"]["labels"]["app.kubernetes.io/component"] == "api"
    ]
    assert api_monitor["spec"]["selector"]["matchLabels"].items() <= api_service["metadata"]["labels"].items()
    assert [(e["port"], e["path"]) for e in api_monitor["spec"]["endpoints"]] == [("metrics", "/metrics")]
    assert [p["name"] for p in api_service["spec"]["ports"]] == ["http", "metrics"]
