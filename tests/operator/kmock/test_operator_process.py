"""`credit-jobs operator` as a real process against kmock: it serves Kopf's liveness endpoint and Prometheus
metrics, reads its settings from the environment, and does its job (a CreditJob gets its CronJob)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes
from operator_kmock_support import CJ_PATH, creditjob, get, until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, ConnectionError):
        return ""


async def test_the_operator_command_serves_health_and_metrics_and_reconciles(kube: Any, tmp_path: Path) -> None:
    metrics_port, health_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREDITJOBS_", "KUBERNETES_"))}
    env.update(
        KUBECONFIG=kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION,
        CREDITJOBS_METRICS_PORT=str(metrics_port),
        CREDITJOBS_HEALTH_PORT=str(health_port),
        CREDITJOBS_DEFAULT_IMAGE="registry.test/from-env:7",
        CREDITJOBS_NAMESPACES="",
        LOG_FORMAT="json",
    )
    cli = str(Path(sys.executable).with_name("credit-jobs"))
    with (tmp_path / "operator.log").open("w") as log:
        process = await asyncio.create_subprocess_exec(
            cli, "operator", "--standalone", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log
        )
    try:

        async def poll(url: str) -> str:
            for _ in range(200):
                text = await asyncio.to_thread(fetch, url)
                if text:
                    return text
                await asyncio.sleep(0.05)
            raise AssertionError(f"{url} never answered")

        health = await poll(f"http://127.0.0.1:{health_port}/healthz")
        await kube.post(CJ_PATH.format(ns="proc"), json=creditjob("proc", "proc"))
        cron = await until(lambda: get(kube, "cronjobs", "proc", "proc"), timeout=15, what="CronJob")
        text = await poll(f"http://127.0.0.1:{metrics_port}/metrics")
        for _ in range(100):
            if 'creditjob="proc"' in text:
                break
            await asyncio.sleep(0.05)
            text = await asyncio.to_thread(fetch, f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=15)
        except TimeoutError:
            process.kill()
            await process.wait()
    assert health  # Kopf's liveness report (JSON of the probes)
    assert (
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.test/from-env:7"
    )
    assert 'creditjobs_creditjob_last_success_timestamp_seconds{creditjob="proc",namespace="proc"} 0.0' in text
    assert "creditjobs_operator_reconcile_total" in text
    assert not re.search(r"^\w+_created[{ ]", text, re.MULTILINE)  # prometheus_client _created series are off
    assert process.returncode == 0, (tmp_path / "operator.log").read_text()[-2000:]
