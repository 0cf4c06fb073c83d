"""Benchmark (not a test; `make bench-operator`): 200 CreditJobs created at once → how fast do their CronJobs exist?

Starts kmock's Kubernetes emulator in this process and the real operator (`credit-jobs operator --standalone`) as a
subprocess pointed at it, creates N CreditJobs concurrently, and records for each the time from its create
request to the create request of its CronJob (stamped inside the emulator, so polling adds no error). Prints
p50/p99 latency (target p99 ≤ 1 s), each also as a ratio to the baseline measured first in the same run (one
CreditJob created alone), the operator's API requests per new CreditJob (target ≤ 4) and its peak RSS (VmHWM;
target ≤ 120 MB). kmock runs no controllers, so only the operator's own work is measured. Stops the operator and
the emulator at the end.

    python bench/bench_operator.py [--count 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from kmock import KubernetesEmulator, ResourceInfo, Server

TARGET_P99_S = 1.0
TARGET_RSS_MB = 120.0
TARGET_REQUESTS = 4.0


class TimedEmulator(KubernetesEmulator):
    """kmock stamping server-assigned metadata and the arrival time of every CronJob create."""

    created_at: dict[str, float]
    cronjob_at: dict[str, float]
    inflight: dict[int, Any]
    operator_requests: int

    async def _handle(self, request: Any) -> Any:
        # The operator's requests (the kubernetes client's and Kopf's), not this bench's (aiohttp) nor watch streams.
        if "aiohttp" not in str(request.headers.get("User-Agent", "")) and request.params.get("watch") != "true":
            self.operator_requests += 1
        # kmock keeps every request for test assertions and matches each new one against that history, which
        # is quadratic; keep only the requests in flight so that the bench measures the operator, not the mock.
        self.inflight[id(request)] = request
        self._requests[:] = list(self.inflight.values())
        try:
            return await self._timed_handle(request)
        finally:
            self.inflight.pop(id(request), None)

    async def _timed_handle(self, request: Any) -> Any:
        data = request.data
        if request.resource is not None and isinstance(data, dict) and request.action is not None:
            meta = data.setdefault("metadata", {})
            if request.action.name == "CREATE":
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
                meta.setdefault("generation", 1)
                meta["resourceVersion"] = uuid.uuid4().hex[:8]
                if request.resource.plural == "cronjobs":
                    self.cronjob_at.setdefault(meta.get("name", ""), time.perf_counter())
            elif request.action.name == "UPDATE":
                meta["resourceVersion"] = uuid.uuid4().hex[:8]
        return await super()._handle(request)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(url: str) -> dict[str, float]:
    """The operator's reconcile counters, from its own /metrics endpoint."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        for name in (
            "creditjobs_operator_reconcile_duration_seconds_sum",
            "creditjobs_operator_reconcile_duration_seconds_count",
        ):
            if line.startswith(name + " "):
                values[name] = float(line.split()[1])
    return values


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size of a process (Linux VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def main(count: int) -> int:
    emulator = TimedEmulator()
    emulator.created_at = {}
    emulator.cronjob_at = {}
    emulator.inflight = {}
    emulator.operator_requests = 0
    async with emulator as kmock, Server(kmock):
        kmock.resources.load_bundled()
        kmock.resources["credits.dev/v1alpha1/creditjobs"] = ResourceInfo(
            kind="CreditJob",
            namespaced=True,
            subresources={"status"},
            verbs={"list", "watch", "get", "create", "patch", "delete"},
        )
        metrics_port = free_port()
        with tempfile.TemporaryDirectory() as tmp:
            kubeconfig = Path(tmp) / "kubeconfig"
            kubeconfig.write_text(
                json.dumps(
                    {
                        "apiVersion": "v1",
                        "kind": "Config",
                        "current-context": "k",
                        "clusters": [{"name": "k", "cluster": {"server": str(kmock.url).rstrip("/")}}],
                        "users": [{"name": "u", "user": {"token": "t"}}],
                        "contexts": [{"name": "k", "context": {"cluster": "k", "user": "u"}}],
                    }
                )
            )
            env = {k: v for k, v in os.environ.items() if not k.startswith(("CREDITJOBS_", "KUBERNETES_"))}
            env.update(
                KUBECONFIG=str(kubeconfig),
                CREDITJOBS_METRICS_PORT=str(metrics_port),
                CREDITJOBS_HEALTH_PORT=str(free_port()),
                CREDITJOBS_DEFAULT_IMAGE="bench/credit-jobs:1",
                LOG_FORMAT="json",
            )
            cli = Path(sys.executable).with_name("credit-jobs")
            # BENCH_OPERATOR_LOG=path keeps the operator's (verbose) log; BENCH_PROFILE=path profiles its main thread.
            log_path = os.environ.get("BENCH_OPERATOR_LOG", os.devnull)
            profile = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
            verbose = ["--verbose"] if log_path != os.devnull else []
            argv = [sys.executable, *profile, str(cli), "operator", "--standalone", *verbose]
            with open(log_path, "w") as log:
                operator = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)
            try:
                await asyncio.sleep(3.0)  # start-up: imports, discovery, initial LIST and WATCH
                if operator.poll() is not None:
                    print(f"operator exited early with code {operator.returncode}", file=sys.stderr)
                    return 1
                idle_rss = peak_rss_mb(operator.pid)

                async def create(i: int, name: str) -> None:
                    body = {
                        "apiVersion": "credits.dev/v1alpha1",
                        "kind": "CreditJob",
                        "metadata": {"name": name, "namespace": f"bench-{i % 10}"},
                        "spec": {
                            "usecase": "distribute-credits",
                            "schedule": "0 0 1 * *",
                            "params": {"batchSize": 5000},
                        },
                    }
                    emulator.created_at[name] = time.perf_counter()
                    async with kmock.post(
                        f"/apis/credits.dev/v1alpha1/namespaces/bench-{i % 10}/creditjobs", json=body
                    ) as response:
                        response.raise_for_status()

                # Baseline: one CreditJob alone, same operator, same emulator, same machine load.
                await create(0, "solo")
                while "solo" not in emulator.cronjob_at and time.perf_counter() - emulator.created_at["solo"] < 30:
                    await asyncio.sleep(0.01)
                baseline = emulator.cronjob_at.pop("solo", float("nan")) - emulator.created_at.pop("solo")
                await asyncio.sleep(2.0)  # the solo pass's status write and Kopf's diff base are done
                requests_before = emulator.operator_requests
                started = time.perf_counter()
                await asyncio.gather(*(create(i, f"bench-{i:04d}") for i in range(count)))
                while len(emulator.cronjob_at) < count and time.perf_counter() - started < 60:
                    await asyncio.sleep(0.01)
                total = time.perf_counter() - started
                await asyncio.sleep(2.0)  # let status writes and CronJob-event passes settle before the RSS peak
                requests = (emulator.operator_requests - requests_before) / count
                rss = peak_rss_mb(operator.pid)
                operator_cpu = sum(psutil.Process(operator.pid).cpu_times()[:2])
                scraped = await asyncio.to_thread(scrape, f"http://127.0.0.1:{metrics_port}/metrics")
                bench_cpu = sum(psutil.Process().cpu_times()[:2])
            finally:
                operator.send_signal(signal.SIGTERM)
                try:
                    operator.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    operator.kill()
                    operator.wait()

    latencies = [emulator.cronjob_at[n] - t for n, t in emulator.created_at.items() if n in emulator.cronjob_at]
    missing = count - len(latencies)
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    print(f"CreditJobs created at once:     {count}")
    print(f"CronJobs created:               {len(latencies)} (missing {missing}) in {total:.2f} s")
    print(f"baseline (one CreditJob alone): {baseline * 1000:.0f} ms")
    print(f"creation → CronJob latency p50: {p50 * 1000:.0f} ms = {p50 / baseline:.1f}x baseline")
    print(
        f"creation → CronJob latency p99: {p99 * 1000:.0f} ms = {p99 / baseline:.1f}x baseline"
        f"   (target ≤ {TARGET_P99_S * 1000:.0f} ms)"
    )
    print(f"API requests per new CreditJob: {requests:.2f}   (target ≤ {TARGET_REQUESTS:.0f})")
    mean = statistics.mean(latencies)
    print(f"                         max:   {max(latencies) * 1000:.0f} ms, mean {mean * 1000:.0f} ms")
    passes = scraped.get("creditjobs_operator_reconcile_duration_seconds_count", 0.0)
    in_passes = scraped.get("creditjobs_operator_reconcile_duration_seconds_sum", 0.0)
    print(f"reconcile passes:               {passes:.0f}, mean {in_passes / max(passes, 1) * 1000:.0f} ms each")
    print(f"CPU seconds: operator {operator_cpu:.1f}, emulator (this process) {bench_cpu:.1f}")
    print(f"operator RSS after start-up:    {idle_rss:.1f} MB")
    print(f"operator peak RSS:              {rss:.1f} MB   (target ≤ {TARGET_RSS_MB:.0f} MB)")
    met = p99 <= TARGET_P99_S and rss <= TARGET_RSS_MB and requests <= TARGET_REQUESTS
    print("targets met" if met else "targets missed (see docs/operator.md, Performance)")
    # A missed target is a figure to report, not a broken operator; a missing CronJob is.
    return 0 if missing == 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    sys.exit(asyncio.run(main(parser.parse_args().count)))
