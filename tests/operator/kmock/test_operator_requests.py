"""What the operator costs the API server, counted in kmock's request log.

The real `credit-jobs operator --standalone` process runs against kmock; every request it makes lands in the
emulator's log (told apart from the test's own requests by the User-Agent: the test's client is aiohttp). Steady
state at the production resync (60 s) and at a short one: at most one LIST of each kind (CreditJobs, CronJobs,
child Jobs) per resync and watched namespace, and nothing per CreditJob. A burst of new CreditJobs: at most 4
requests each, and no "Connection pool is full".
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from operator_kmock_support import CJ_PATH, condition, creditjob, get, until
from test_operator_process import fetch, free_port

DEFAULT_RESYNC = 60.0  # OperatorSettings.resync_seconds
KOPF_DIFF_BASE = "kopf.credits.dev/last-handled-configuration"
MAX_REQUESTS_PER_NEW_CREDITJOB = 4


@asynccontextmanager
async def operator_process(
    kube: Any, log_path: Path, resync: float | None, namespaces: str = ""
) -> AsyncIterator[None]:
    """`credit-jobs operator --standalone` against kmock, clusterwide unless `namespaces` names some;
    `resync=None` keeps the default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREDITJOBS_", "KUBERNETES_"))}
    health_port = free_port()
    env.update(
        KUBECONFIG=kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION,
        CREDITJOBS_METRICS_PORT=str(free_port()),
        CREDITJOBS_HEALTH_PORT=str(health_port),
        CREDITJOBS_DEFAULT_IMAGE="registry.test/credit-jobs:1.2.3",
        LOG_FORMAT="json",
    )
    if resync is not None:
        env["CREDITJOBS_RESYNC_SECONDS"] = str(resync)
    if namespaces:
        env["CREDITJOBS_NAMESPACES"] = namespaces
    cli = str(Path(sys.executable).with_name("credit-jobs"))
    with log_path.open("w") as log:
        process = await asyncio.create_subprocess_exec(
            cli, "operator", "--standalone", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=log
        )
    try:
        for _ in range(400):
            if await asyncio.to_thread(fetch, f"http://127.0.0.1:{health_port}/healthz"):
                break
            await asyncio.sleep(0.05)
        await until(lambda: _operator_lists(kube, "creditjobs"), timeout=15, what="the first LIST of CreditJobs")
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=15)
        except TimeoutError:
            process.kill()
            await process.wait()


def operator_requests(kube: Any, since: int = 0, *, watches: bool = False) -> list[Any]:
    """The operator's requests (not the test's; long-lived WATCH streams only with `watches`) from `since` on."""
    found = []
    for request in list(kube)[since:]:
        agent = str(request.headers.get("User-Agent", ""))
        if "aiohttp" in agent or (not watches and request.action is not None and request.action.name == "WATCH"):
            continue
        found.append(request)
    return found


def _lists_since(kube: Any, start: int, plural: str = "creditjobs") -> list[Any]:
    return [
        r
        for r in operator_requests(kube, start)
        if r.action is not None and r.action.name == "LIST" and r.resource is not None and r.resource.plural == plural
    ]


def _operator_lists(kube: Any, plural: str) -> list[Any]:
    return [
        r
        for r in operator_requests(kube)
        if r.action is not None and r.action.name == "LIST" and r.resource is not None and r.resource.plural == plural
    ]


def describe(requests: list[Any]) -> collections.Counter[str]:
    """Requests by client (Kopf's own, or the operator's kubernetes client), method, resource and action."""
    return collections.Counter(
        f"{'kopf' if 'kopf' in str(r.headers.get('User-Agent', '')).lower() else 'client'} {r.method.value} "
        f"{r.resource.plural if r.resource else r.url.path}{'/' + r.subresource if r.subresource else ''}"
        f" ({r.action.name if r.action else '?'})"
        for r in requests
    )


def settled(kube: Any, names: list[tuple[str, str]]) -> bool:
    """Every CreditJob has its CronJob, a Ready condition and Kopf's diff base (Kopf's last write)."""
    for ns, name in names:
        body = get(kube, "creditjobs", ns, name) or {}
        if KOPF_DIFF_BASE not in (body.get("metadata", {}).get("annotations") or {}):
            return False
        if not get(kube, "cronjobs", ns, name) or condition(kube, ns, name, "Ready").get("status") != "True":
            return False
    return True


async def quiet(kube: Any, seconds: float = 1.0, timeout: float = 30.0) -> None:
    """Until the operator has sent nothing for `seconds` (late echoes of its writes are counted, not cut off)."""
    deadline = time.monotonic() + timeout
    count, since = len(operator_requests(kube)), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now_count = len(operator_requests(kube))
        if now_count != count:
            count, since = now_count, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return
    raise AssertionError(f"the operator never went quiet: {describe(operator_requests(kube)[-30:])}")


async def create_all(kube: Any, names: list[tuple[str, str]]) -> None:
    await asyncio.gather(*(kube.post(CJ_PATH.format(ns=ns), json=creditjob(name, ns)) for ns, name in names))


@pytest.mark.parametrize("resync", [None, 2.0], ids=["default-resync", "short-resync"])
async def test_steady_state_reads_do_not_grow_with_the_number_of_creditjobs(
    kube: Any, tmp_path: Path, resync: float | None
) -> None:
    names = [(f"steady-{i % 3}", f"grant-{i}") for i in range(12)]
    period = resync or DEFAULT_RESYNC
    async with operator_process(kube, tmp_path / "operator.log", resync):
        await create_all(kube, names)
        await until(lambda: settled(kube, names), timeout=30, what="every CreditJob settled")
        await quiet(kube)
        start, started = len(list(kube)), time.monotonic()
        resyncs = 1 if resync is None else 3  # the first resync comes `period` after start-up
        await until(
            lambda: len(_lists_since(kube, start)) >= resyncs, timeout=resyncs * period + 30, what="the resyncs"
        )
        await quiet(kube)  # the passes after the last resync's LIST have sent whatever they send
        seen = operator_requests(kube, start)
        window = time.monotonic() - started
    lists = [r for r in seen if r.action is not None and r.action.name == "LIST"]
    print(f"{len(names)} CreditJobs, {window:.0f} s at resync {period:.0f} s: {dict(describe(seen))}")
    assert lists, "no resync in the window: the test proves nothing"
    by_kind = collections.Counter(r.resource.plural for r in lists if r.resource is not None)
    assert set(by_kind) == {"creditjobs", "cronjobs", "jobs"}, by_kind  # deletions a watch missed are noticed
    assert all(n <= window / period + 1 for n in by_kind.values()), by_kind  # one LIST of each per resync
    assert seen == lists, describe(seen)  # nothing per CreditJob: no GET, no per-CreditJob Job LIST, no status write


async def test_a_new_creditjob_costs_at_most_four_requests_and_bursts_keep_their_connections(
    kube: Any, tmp_path: Path
) -> None:
    names = [(f"burst-{i % 4}", f"grant-{i}") for i in range(40)]
    log_path = tmp_path / "operator.log"
    async with operator_process(kube, log_path, None):  # the default resync: none fires during the test
        await quiet(kube)
        start = len(list(kube))
        await create_all(kube, names)
        await until(lambda: settled(kube, names), timeout=60, what="every CreditJob settled")
        await quiet(kube)
        seen = operator_requests(kube, start)
    print(f"{len(names)} new CreditJobs: {len(seen)} requests, {dict(describe(seen))}")
    assert len(seen) <= MAX_REQUESTS_PER_NEW_CREDITJOB * len(names), describe(seen)
    assert "Connection pool is full" not in log_path.read_text()


@pytest.mark.parametrize("namespaces", ["", "billing,billing-eu"], ids=["cluster-wide", "namespaced"])
async def test_at_the_defaults_the_operator_never_reads_crds_or_namespaces(
    kube: Any, tmp_path: Path, namespaces: str
) -> None:
    """What the chart no longer grants by default (rbac.discovery: false) the operator never asks for: the CRD is
    installed by the chart before the operator starts, so Kopf's runtime observation of CRDs and namespaces is
    switched off (CREDITJOBS_WATCH_CRDS) and its one start-up scan reads only the API discovery documents."""
    names = [(ns, "grant") for ns in (namespaces.split(",") if namespaces else ["anywhere"])]
    async with operator_process(kube, tmp_path / "operator.log", None, namespaces=namespaces):
        await create_all(kube, names)
        await until(lambda: settled(kube, names), timeout=30, what="every CreditJob settled")
        await quiet(kube)
        seen = operator_requests(kube, watches=True)
    touched = collections.Counter(r.resource.plural for r in seen if r.resource is not None)
    print(f"{namespaces or 'cluster-wide'}: {dict(describe(seen))}")
    assert touched["creditjobs"], touched  # the test saw the operator at work
    assert touched["cronjobs"], touched
    assert not touched["customresourcedefinitions"], describe(seen)
    assert not touched["namespaces"], describe(seen)
