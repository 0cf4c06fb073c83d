"""`credit-jobs operator` as a real process through an API outage.

Between the operator and kmock sits a TCP proxy the test can cut: every open connection (watch streams included)
is dropped and new ones are refused, as when the API server or the network to it goes away. The operator runs
with leader election, as the chart's Deployment does: the leader cannot renew its Lease, and after the renew
deadline (10 s) it must exit non-zero — it may no longer act, as another replica may take over once the lease
expires — so the Deployment restarts it, instead of lingering without a liveness endpoint. (Before the Lease, Kopf
stopped after its peering keep-alive failed, 161 s in, and the process lingered on as a zombie.)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes
from operator_kmock_support import CJ_PATH, creditjob, get, live, until
from test_operator_process import free_port

# The renew deadline (10 s) after the last renewal (≤ 2 s before the cut), plus a loaded machine's slack.
EXIT_BOUND = 30.0


class CuttableProxy:
    """A TCP proxy to kmock; `cut()` drops every connection and refuses new ones."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()  # new connections are refused
        for writer in list(self.writers):
            writer.transport.abort()  # open ones (watch streams) drop


async def test_the_operator_exits_non_zero_when_kopf_stops_after_an_api_outage(kube: Any, tmp_path: Path) -> None:
    proxy = CuttableProxy(int(kube.url.port))
    port = await proxy.start()
    config = tmp_path / "proxied-kubeconfig"

    original = json.loads(Path(kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION).read_text())
    original["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{port}"
    config.write_text(json.dumps(original))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREDITJOBS_", "KUBERNETES_"))}
    env.update(
        KUBECONFIG=str(config),
        CREDITJOBS_METRICS_PORT=str(free_port()),
        CREDITJOBS_HEALTH_PORT=str(free_port()),
        CREDITJOBS_DEFAULT_IMAGE="registry.test/credit-jobs:7",
    )
    cli = str(Path(sys.executable).with_name("credit-jobs"))
    log_path = tmp_path / "operator.log"
    with log_path.open("w") as log:
        process = await asyncio.create_subprocess_exec(
            cli, "operator", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log
        )
    try:
        await kube.post(CJ_PATH.format(ns="out"), json=creditjob("grant", "out"))
        await until(lambda: get(kube, "cronjobs", "out", "grant"), timeout=15, what="CronJob before the outage")
        lease = await until(lambda: live(kube, "leases"), what="the leader Lease")
        assert lease[0]["spec"]["holderIdentity"]  # it runs with leader election, as the chart's Deployment does
        await proxy.cut()
        cut_at = time.monotonic()
        code = await asyncio.wait_for(process.wait(), timeout=EXIT_BOUND)
        took = time.monotonic() - cut_at
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = log_path.read_text()
    print(f"exit {code} {took:.1f} s after the outage began")
    assert code not in (0, None), text[-3000:]
    assert code > 0, text[-3000:]  # an exit of its own, not Kopf's ultimate SIGKILL ten minutes later
    assert "no longer the leader" in text, text[-3000:]
