"""Helpers of the end-to-end monitoring tests: free ports, polling, child-process servers stopped by PID, the
chart-rendered alert rules, Prometheus' alerts API, and the script that serves the operator's metrics registry.

Imported by tests/e2e (pytest puts this folder on sys.path); the fixtures that use them live in conftest.py.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import helm_python
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "credit-jobs"
OPERATOR_JOB = "credit-jobs-operator"  # the operator scrape job = the chart's default operatorJobLabel
T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make system-deps` (Debian prometheus, prometheus-pushgateway)")
    return path


def http_get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def wait_for(
    what: str, probe: Callable[[], T | None], *, deadline_s: float = 60.0, describe: Callable[[], str] = str
) -> T:
    """Poll `probe` until it returns something truthy; fail (with `describe()`) if it never does."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        result = probe()
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"gave up waiting for {what}: {describe()}")


@dataclass
class Server:
    """A child process listening on 127.0.0.1:port; `stop()` ends it by PID."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_server(name: str, argv: list[str], port: int, workdir: Path, ready_path: str) -> Server:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    server = Server(name, process, port, log)

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode}: {server.logs()}")
        try:
            http_get(server.url + ready_path)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False
        return True

    try:
        wait_for(f"{name} to be ready", ready, deadline_s=30, describe=server.logs)
    except BaseException:
        server.stop()
        raise
    return server


# One process serving the operator's own metrics registry (credit_operator.metrics.serve), with the
# per-CreditJob series set through the operator's observe_creditjob() — the same calls its handlers make.
OPERATOR_METRICS_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading
    from credit_operator import metrics

    port, samples = int(sys.argv[1]), json.loads(sys.argv[2])
    for sample in samples:
        metrics.observe_creditjob(metrics.CreditJobSample(**sample))
    metrics.serve(port, "127.0.0.1")
    threading.Event().wait()
    """
)


def render_rules(alerts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The rule groups of the chart's PrometheusRule, rendered by Helm with the given alert settings."""
    chart = helm_python.Chart.load(CHART)
    try:
        rendered = chart.render(
            {"prometheusRule": {"enabled": True, "alerts": alerts}}, name="credit-jobs", namespace="billing"
        )
    finally:
        chart.close()
    rule = yaml.safe_load(rendered["credit-jobs/templates/prometheusrule.yaml"])
    return {"groups": rule["spec"]["groups"]}


@dataclass
class Prometheus(Server):
    def alerts(self) -> list[dict[str, Any]]:
        payload = json.loads(http_get(self.url + "/api/v1/alerts"))
        alerts: list[dict[str, Any]] = payload["data"]["alerts"]
        return alerts

    def firing(self, alertname: str, **labels: str) -> list[dict[str, Any]]:
        return [
            alert
            for alert in self.alerts()
            if alert["state"] == "firing"
            and alert["labels"]["alertname"] == alertname
            and all(alert["labels"].get(k) == v for k, v in labels.items())
        ]


def pushgateway_groups(url: str) -> list[dict[str, Any]]:
    """Every group the Pushgateway holds (its /api/v1/metrics): grouping labels plus the metric families pushed."""
    payload = json.loads(http_get(url + "/api/v1/metrics"))
    groups: list[dict[str, Any]] = payload["data"]
    return groups


def group_keys(url: str) -> set[tuple[str, ...]]:
    """The grouping keys held, as (job, namespace, creditjob, shard); a label the group lacks is ""."""
    return {
        tuple(group["labels"].get(label, "") for label in ("job", "namespace", "creditjob", "shard"))
        for group in pushgateway_groups(url)
    }
