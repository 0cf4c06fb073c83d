"""Real `credit-jobs operator` processes against kmock, at production defaults: start, signal, read their JSON log
lines, /healthz and /metrics. Used by the leader-election, paused-state and logging tests of this folder.

The environment is the test process's minus every CREDITJOBS_* / KUBERNETES_* variable (the `kube` fixture
shortens the resync for in-process tests: these processes must not inherit that), plus a kubeconfig pointing at
kmock and free ports.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes

CLI = str(Path(sys.executable).with_name("credit-jobs"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(url: str) -> tuple[int, str]:
    """(HTTP status, body); (0, "") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), str(response.read().decode())
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    """Poll `predicate` (run in a thread: it may do blocking HTTP) until truthy; the value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout}s")
        await asyncio.sleep(step)


@dataclass
class Replica:
    """One `credit-jobs operator` process."""

    name: str
    log_path: Path
    args: tuple[str, ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)
    metrics_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> Replica:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CREDITJOBS_", "KUBERNETES_"))}
        env.pop("LOG_FORMAT", None)
        env.update(
            KUBECONFIG=kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION,
            CREDITJOBS_METRICS_PORT=str(self.metrics_port),
            CREDITJOBS_HEALTH_PORT=str(self.health_port),
            CREDITJOBS_DEFAULT_IMAGE="registry.test/credit-jobs:7",
            CREDITJOBS_POD_NAME=self.name,
            **self.extra_env,
        )
        with self.log_path.open("a") as log:
            self.process = await asyncio.create_subprocess_exec(
                CLI, "operator", *self.args, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log
            )
        return self

    def send(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal and wait; SIGKILL when it does not end in time. The exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
            try:
                await asyncio.wait_for(self.process.wait(), timeout=timeout)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        assert self.process.returncode is not None
        return self.process.returncode

    def text(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def records(self) -> list[dict[str, Any]]:
        """Every log line, parsed (a line that is not JSON fails the test: the format is the contract)."""
        found = []
        for line in self.text().splitlines():
            if line.strip():
                try:
                    found.append(json.loads(line))
                except ValueError as exc:
                    raise AssertionError(f"{self.name}: not a JSON line: {line!r}") from exc
        return found

    def metric(self, name: str) -> str:
        _, text = fetch(f"http://127.0.0.1:{self.metrics_port}/metrics")
        return next((line.split()[-1] for line in text.splitlines() if line.startswith(f"{name} ")), "")

    def is_leader(self) -> bool:
        return self.metric("creditjobs_operator_leader") == "1.0"

    def health(self) -> tuple[int, str]:
        return fetch(f"http://127.0.0.1:{self.health_port}/healthz")


def requests_by(kube: Any, method: str, path_part: str) -> dict[str, int]:
    """How many `method` requests under a path each replica sent (by its User-Agent, credit-jobs-operator/<id>)."""
    counts: dict[str, int] = {}
    for request in list(kube):
        if request.method.value != method or path_part not in str(request.url.path):
            continue
        agent = str(request.headers.get("User-Agent", ""))
        counts[agent] = counts.get(agent, 0) + 1
    return counts
