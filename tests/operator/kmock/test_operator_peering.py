"""`credit-jobs operator` (peering on, as the chart runs it) on a cluster WITHOUT the peering CRD and object — the
set-up of someone following the README locally (issue 8, item 3).

Kopf then pauses all watching, silently. The operator must say so within seconds (what is missing, the two fixes),
repeat it while it lasts, and show it in `creditjobs_operator_paused`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import kubernetes
from kmock import ResourceInfo
from test_operator_process import fetch, free_port

from credit_operator.handlers import PEERING_WARNING_INTERVAL

FIRST_WARNING_BOUND = 10.0


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    for _ in range(int(timeout / 0.1)):
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout}s")


async def test_a_missing_peering_is_reported_repeatedly_and_shown_in_a_metric(kube: Any, tmp_path: Path) -> None:
    metrics_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREDITJOBS_", "KUBERNETES_"))}
    env.update(
        KUBECONFIG=kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION,
        CREDITJOBS_METRICS_PORT=str(metrics_port),
        CREDITJOBS_HEALTH_PORT=str(free_port()),
        CREDITJOBS_DEFAULT_IMAGE="registry.test/credit-jobs:7",
    )
    log_path = tmp_path / "operator.log"
    cli = str(Path(sys.executable).with_name("credit-jobs"))
    with log_path.open("w") as log:
        process = await asyncio.create_subprocess_exec(
            cli, "operator", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log
        )

    def warnings() -> list[str]:
        return [line for line in log_path.read_text().splitlines() if "operator is PAUSED" in line]

    def paused() -> str:
        text = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
        return next(
            (line.split()[-1] for line in text.splitlines() if line.startswith("creditjobs_operator_paused ")), ""
        )

    try:
        await wait_for(lambda: warnings(), FIRST_WARNING_BOUND, "the first warning")
        (first,) = warnings()
        assert "ClusterKopfPeering CRD (kopf.dev/v1)" in first
        assert "ClusterKopfPeering 'credit-jobs'" in first
        assert "install the chart's CRDs and peering object" in first
        assert "--standalone" in first
        assert json.loads(first)["severity"] == "warn"  # Kopf's JSON log format
        await wait_for(lambda: paused() == "1.0", 5, "creditjobs_operator_paused 1")
        await wait_for(lambda: len(warnings()) >= 2, PEERING_WARNING_INTERVAL + 10, "the repeated warning")

        # The fix: the chart's peering CRD and object. The next check sees them.
        kube.resources["kopf.dev/v1/clusterkopfpeerings"] = ResourceInfo(
            kind="ClusterKopfPeering", namespaced=False, verbs={"list", "watch", "get", "create", "patch"}
        )
        peering = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "credit-jobs"}}
        await kube.post("/apis/kopf.dev/v1/clusterkopfpeerings", json=peering)
        await wait_for(lambda: paused() == "0.0", PEERING_WARNING_INTERVAL + 10, "creditjobs_operator_paused 0")
        count = len(warnings())
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=15)
        except TimeoutError:
            process.kill()
            await process.wait()
    assert count == len(warnings())  # no warning after the fix
    assert "the operator resumes" in log_path.read_text()
    assert process.returncode == 0, log_path.read_text()[-2000:]  # SIGTERM: a requested stop
