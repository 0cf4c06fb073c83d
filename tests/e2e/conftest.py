"""Fixtures of the end-to-end monitoring tests: a real Pushgateway, a real operator /metrics endpoint and a real
Prometheus loading the chart-rendered alert rules, all on loopback with free ports.

Prometheus and the Pushgateway come from the Debian packages (`make system-deps`); without them the tests fail, not
skip. Every server runs as a child process in a temporary folder and is stopped by its PID when the test ends.
Helpers live in e2e_support.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_support import (
    OPERATOR_JOB,
    OPERATOR_METRICS_SCRIPT,
    Prometheus,
    Server,
    free_port,
    render_rules,
    require_tool,
    start_server,
)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A temporary folder for configs, logs and the TSDB, deleted after the servers using it have stopped."""
    with tempfile.TemporaryDirectory(prefix="credit-jobs-e2e-") as folder:
        yield Path(folder)


@pytest.fixture
def pushgateway(workdir: Path) -> Iterator[Server]:
    binary = require_tool("prometheus-pushgateway")
    port = free_port()
    server = start_server(
        "pushgateway",
        # Debian's build persists to /var/lib/prometheus/pushgateway.data by default: keep this one in memory.
        [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file=", "--log.level=warn"],
        port,
        workdir,
        "/-/ready",
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def operator_metrics(workdir: Path) -> Iterator[Callable[[list[dict[str, Any]]], Server]]:
    started: list[Server] = []

    def start(samples: list[dict[str, Any]]) -> Server:
        port = free_port()
        argv = [sys.executable, "-c", OPERATOR_METRICS_SCRIPT, str(port), json.dumps(samples)]
        server = start_server("operator-metrics", argv, port, workdir, "/metrics")
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def start_prometheus(workdir: Path) -> Iterator[Callable[..., Prometheus]]:
    """start_prometheus(alerts=…, pushgateway=…, operator=…): Prometheus scraping them every second."""
    binary = require_tool("prometheus")
    started: list[Prometheus] = []

    def start(*, alerts: dict[str, dict[str, Any]], pushgateway: Server, operator: Server | None = None) -> Prometheus:
        rules = workdir / "rules.yml"
        rules.write_text(yaml.safe_dump(render_rules(alerts), sort_keys=False))
        scrape = [
            {
                "job_name": "pushgateway",
                "honor_labels": True,  # keep the pushed job="credit-jobs" (docs/contract.md)
                "static_configs": [{"targets": [f"127.0.0.1:{pushgateway.port}"]}],
            }
        ]
        if operator is not None:
            # What the chart's ServiceMonitor gives: the release namespace as a target label (the operator alerts
            # match on it), and honorLabels so a series' own `namespace` (its CreditJob's) wins over it.
            target = {"targets": [f"127.0.0.1:{operator.port}"], "labels": {"namespace": "billing"}}
            scrape.append({"job_name": OPERATOR_JOB, "honor_labels": True, "static_configs": [target]})
        config = workdir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
                    "rule_files": [str(rules)],
                    "scrape_configs": scrape,
                }
            )
        )
        port = free_port()
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        base = start_server("prometheus", argv, port, workdir, "/-/ready")
        prometheus = Prometheus(base.name, base.process, base.port, base.log)
        started.append(prometheus)
        return prometheus

    try:
        yield start
    finally:
        for prometheus in started:
            prometheus.stop()


@pytest.fixture(scope="session")
def credit_jobs_cli() -> str:
    """The `credit-jobs` console script; the run-based tests skip only while `credit-jobs run` does not exist."""
    cli = shutil.which(
        "credit-jobs", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    )
    if cli is None:
        pytest.fail("the credit-jobs console script is not installed (pip install -e .)")
    probe = subprocess.run([cli, "run", "--help"], capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode != 0:
        pytest.skip("`credit-jobs run` does not exist yet (jobs core); the monitoring e2e needs it")
    return cli
