"""`credit-jobs trigger`, the run-now name guarantee without Kopf, and the operator's settings and metrics
endpoint — against kmock where an API server is involved."""

from __future__ import annotations

import asyncio
import importlib.metadata
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import typer
from operator_kmock_support import (
    CJ_PATH,
    NOW,
    creditjob,
    get,
    jobs_of,
)
from prometheus_client import enable_created_metrics
from typer.testing import CliRunner

from credit_jobs.domain.errors import ConfigError
from credit_operator import commands, metrics
from credit_operator.cronjob_manifest import ManifestDefaults
from credit_operator.kube import KubeApi, connect
from credit_operator.reconcile import reconcile
from credit_operator.settings import OperatorSettings


def cli() -> typer.Typer:
    app = typer.Typer()
    commands.register(app)
    return app


async def test_trigger_sets_the_run_now_annotation_and_prints_the_token(kube: Any) -> None:
    await kube.post(CJ_PATH.format(ns="trig"), json=creditjob("grant", "trig"))
    result = await asyncio.to_thread(
        CliRunner().invoke, cli(), ["trigger", "grant", "--namespace", "trig", "--period-key", "2026-10"]
    )
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", token)
    annotations = (get(kube, "creditjobs", "trig", "grant") or {})["metadata"]["annotations"]
    assert annotations["credits.dev/run-now"] == token
    assert annotations["credits.dev/run-period"] == "2026-10"

    again = await asyncio.to_thread(CliRunner().invoke, cli(), ["trigger", "grant", "-n", "trig"])
    assert again.exit_code == 0
    annotations = (get(kube, "creditjobs", "trig", "grant") or {})["metadata"]["annotations"]
    assert annotations["credits.dev/run-now"] == again.output.strip() != token
    assert "credits.dev/run-period" not in annotations  # a stale period key is removed


async def test_trigger_refuses_a_non_canonical_period_key_before_annotating(kube: Any) -> None:
    await kube.post(CJ_PATH.format(ns="trigk"), json=creditjob("grant", "trigk"))
    wide = "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in "2026-11")  # full-width digits
    for key, message in ((wide, "malformed monthly period key"), ("2026-W48", "malformed monthly period key")):
        result = await asyncio.to_thread(
            CliRunner().invoke, cli(), ["trigger", "grant", "-n", "trigk", "--period-key", key]
        )
        assert isinstance(result.exception, ConfigError)
        assert message in str(result.exception)
    annotations = (get(kube, "creditjobs", "trigk", "grant") or {})["metadata"].get("annotations") or {}
    assert "credits.dev/run-now" not in annotations  # nothing was requested


async def test_trigger_of_a_missing_creditjob_is_a_usage_error(kube: Any) -> None:
    result = await asyncio.to_thread(CliRunner().invoke, cli(), ["trigger", "nope", "--namespace", "trig"])
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception) == "CreditJob trig/nope does not exist"


async def test_the_credit_jobs_cli_exits_2_with_the_reason(kube: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from credit_jobs.entrypoints.cli import main

    code = await asyncio.to_thread(main, ["trigger", "nope", "--namespace", "trig"])
    assert code == 2
    assert "credit-jobs: error: CreditJob trig/nope does not exist" in capsys.readouterr().err


async def test_a_duplicate_run_now_conflicts_instead_of_running_twice(kube: Any) -> None:
    """If the operator dies after creating the Job but before recording the token, the retry's create
    conflicts on the deterministic name: still one Job."""
    await kube.post(CJ_PATH.format(ns="dup"), json=creditjob("grant", "dup"))
    api = KubeApi(await asyncio.to_thread(connect))
    defaults = ManifestDefaults(image="i")

    def one_pass(body: dict[str, Any]) -> Any:
        return reconcile(api, body, now=NOW, defaults=defaults, emit=lambda *_: None)

    await asyncio.to_thread(one_pass, await asyncio.to_thread(api.get_creditjob, "dup", "grant"))
    body = await asyncio.to_thread(api.get_creditjob, "dup", "grant")
    body["metadata"]["annotations"] = {"credits.dev/run-now": "t1"}
    first = await asyncio.to_thread(one_pass, body)
    assert [d[1] for d in first.decisions] == ["RunNow"]
    # the same (stale) body again: the token is not in its status, so the pass tries once more
    second = await asyncio.to_thread(one_pass, body)
    assert "RunNow" not in [d[1] for d in second.decisions]
    assert len(jobs_of(kube, "dup", "grant")) == 1


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDITJOBS_NAMESPACES", "billing, ops")
    monkeypatch.setenv("CREDITJOBS_DEFAULT_IMAGE", "img:1")
    monkeypatch.setenv("CREDITJOBS_DEFAULT_DB_SECRET_NAME", "db")
    monkeypatch.setenv("CREDITJOBS_DEFAULT_DB_SECRET_KEY", "dsn")
    monkeypatch.setenv("PUSHGATEWAY_URL", "http://pgw:9091")
    monkeypatch.setenv("LOG_FORMAT", "console")
    monkeypatch.setenv("CREDITJOBS_METRICS_PORT", "9999")
    monkeypatch.setenv("CREDITJOBS_HEALTH_PORT", "8888")
    monkeypatch.setenv("CREDITJOBS_LEASE_NAME", "peers")
    monkeypatch.setenv("CREDITJOBS_LEASE_NAMESPACE", "ops")
    s = OperatorSettings()
    assert s.namespace_list == ["billing", "ops"]
    assert not s.clusterwide
    assert (s.metrics_port, s.health_port, s.lease_name, s.log_format) == (9999, 8888, "peers", "console")
    assert s.resolved_lease_namespace() == "ops"
    assert s.manifest_defaults() == ManifestDefaults("img:1", "db", "dsn", "http://pgw:9091")


def test_settings_defaults_watch_every_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "CREDITJOBS_NAMESPACES",
        "CREDITJOBS_DEFAULT_DB_SECRET_NAME",
        "CREDITJOBS_DEFAULT_DB_SECRET_KEY",
        "CREDITJOBS_METRICS_PORT",
        "CREDITJOBS_HEALTH_PORT",
        "CREDITJOBS_LEASE_NAME",
        "CREDITJOBS_LEASE_NAMESPACE",
        "CREDITJOBS_LEASE_DURATION_SECONDS",
        "CREDITJOBS_LEASE_RENEW_DEADLINE_SECONDS",
        "CREDITJOBS_LEASE_RETRY_SECONDS",
        "CREDITJOBS_LEADER_ELECTION",
        "CREDITJOBS_DEFAULT_IMAGE",
    ):
        monkeypatch.delenv(var, raising=False)
    s = OperatorSettings()
    assert s.clusterwide
    # Never `latest`: the image of the operator's own version, the tag the chart's appVersion uses.
    assert s.default_image == f"ghcr.io/credit-jobs/credit-jobs:{importlib.metadata.version('credit-jobs')}"
    chart = (Path(__file__).parents[3] / "charts" / "credit-jobs" / "Chart.yaml").read_text()
    assert f'appVersion: "{importlib.metadata.version("credit-jobs")}"' in chart
    assert (s.default_db_secret_name, s.default_db_secret_key) == ("credit-jobs-db", "url")
    assert (s.metrics_port, s.health_port, s.lease_name) == (9090, 8080, "credit-jobs-operator")
    # controller-runtime's timing; outside a pod the Lease lives in `default`.
    assert (s.leader_election, s.lease_duration_seconds, s.lease_renew_deadline_seconds, s.lease_retry_seconds) == (
        True,
        15.0,
        10.0,
        2.0,
    )
    assert s.resolved_lease_namespace() == "default"


def test_exported_metric_names_are_the_designed_ones() -> None:
    assert metrics.exported_metric_names() == {
        "creditjobs_creditjob_info",
        "creditjobs_creditjob_last_success_timestamp_seconds",
        "creditjobs_creditjob_created_timestamp_seconds",
        "creditjobs_creditjob_next_schedule_timestamp_seconds",
        "creditjobs_creditjob_schedule_interval_seconds",
        "creditjobs_creditjob_active_runs",
        "creditjobs_creditjob_missed_periods_total",
        "creditjobs_failed_periods",
        "creditjobs_operator_reconcile_total",
        "creditjobs_operator_reconcile_duration_seconds",
        "creditjobs_operator_reconcile_duration_seconds_bucket",
        "creditjobs_operator_reconcile_duration_seconds_sum",
        "creditjobs_operator_reconcile_duration_seconds_count",
        "creditjobs_operator_paused",
        "creditjobs_operator_leader",
    }


def test_the_metrics_endpoint_serves_a_never_succeeded_creditjob_as_zero() -> None:
    metrics.observe_creditjob(
        metrics.CreditJobSample("never", "scrape", "expire-credits", "@daily", False, 0.0, 1.8e9, 86400.0, 0)
    )
    server, thread = metrics.serve(0, "127.0.0.1")
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        enable_created_metrics()  # serve() switched them off process-wide; other tests' registries expect them
    assert 'creditjobs_creditjob_last_success_timestamp_seconds{creditjob="never",namespace="scrape"} 0.0' in text
    assert 'creditjobs_creditjob_info{creditjob="never",namespace="scrape",schedule="@daily"' in text
    assert "creditjobs_operator_reconcile_total" in text
    metrics.forget_creditjob("never", "scrape")
    assert (
        metrics.REGISTRY.get_sample_value(
            "creditjobs_creditjob_last_success_timestamp_seconds", {"creditjob": "never", "namespace": "scrape"}
        )
        is None
    )
