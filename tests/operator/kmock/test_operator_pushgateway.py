"""A deleted CreditJob's run metrics leave the Pushgateway: the real operator (Kopf running
credit_operator.handlers) on kmock, with a REAL Pushgateway (Debian `prometheus-pushgateway`, a child process on
loopback stopped by its PID) and the resync at its production default, so only the deletion event can act.

The groups are pushed through the jobs' own push path (`RunMetrics`, `grouping_key`, `push_run_metrics`), so the
grouping key the operator deletes by is the one a run really pushes.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_kmock_support import CJ_PATH, container_env, creditjob, get, operator, until
from prometheus_client import pushadd_to_gateway
from test_operator_process import free_port

from credit_jobs.adapters.pushgateway import push_run_metrics
from credit_jobs.observability.metrics import PUSH_JOB, RunMetrics, grouping_key
from credit_operator.pushgateway import forget_creditjob_groups


class Pushgateway:
    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process, self.url = process, f"http://127.0.0.1:{port}"

    def push_failure(self, namespace: str, creditjob: str, shard: int) -> None:
        metrics = RunMetrics()
        metrics.record(succeeded=False, finished_at=time.time(), duration_s=1.0, items={}, credits={})
        assert push_run_metrics(
            self.url, metrics.registry, job=PUSH_JOB, grouping_key=grouping_key(namespace, creditjob, shard)
        )

    def groups(self) -> set[tuple[str, str, str]]:
        with urllib.request.urlopen(self.url + "/api/v1/metrics", timeout=5) as response:
            data = json.load(response)["data"]
        return {(g["labels"]["namespace"], g["labels"]["creditjob"], g["labels"]["shard"]) for g in data}


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[Pushgateway]:
    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        pytest.fail("prometheus-pushgateway is not installed: run `make system-deps`")
    port = free_port()
    with (tmp_path / "pushgateway.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file=", "--log.level=warn"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    gateway = Pushgateway(process, port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(gateway.url + "/-/ready", timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError):
                log_text = (tmp_path / "pushgateway.log").read_text()
                assert process.poll() is None, log_text
                assert time.monotonic() < deadline, log_text
                time.sleep(0.1)  # the server is starting; nothing else runs yet
        yield gateway
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_deleting_a_creditjob_deletes_its_pushgateway_groups_of_every_shard_and_nothing_else(
    kube: Any, pushgateway: Pushgateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway.url)
    monkeypatch.delenv("CREDITJOBS_RESYNC_SECONDS")  # the production default (60 s): the deletion event must act
    for shard in (0, 1, 2):  # shard 2 was left behind when parallelism went from 3 to 2
        pushgateway.push_failure("billing", "monthly", shard)
    pushgateway.push_failure("staging", "monthly", 0)  # the same name in another namespace
    pushgateway.push_failure("billing", "expire", 0)  # another CreditJob of the namespace
    assert len(pushgateway.groups()) == 5

    async with operator():
        await kube.post(CJ_PATH.format(ns="billing"), json=creditjob("monthly", "billing", parallelism=2))
        cron = await until(lambda: get(kube, "cronjobs", "billing", "monthly"), timeout=15, what="CronJob")
        # the URL the operator deletes at is the one it renders into the CreditJob's runs
        assert container_env(cron)["PUSHGATEWAY_URL"] == pushgateway.url

        async with kube.delete(CJ_PATH.format(ns="billing") + "/monthly") as response:
            assert response.status == 200
        await until(
            lambda: pushgateway.groups() == {("staging", "monthly", "0"), ("billing", "expire", "0")},
            timeout=15,
            what=f"only the other groups left (now {pushgateway.groups()})",
        )


def test_groups_pushed_before_the_namespace_joined_the_key_are_left_alone(pushgateway: Pushgateway) -> None:
    # A legacy group (no namespace label) could be another namespace's CreditJob of the same name: not ours to delete.
    pushadd_to_gateway(
        pushgateway.url,
        job=PUSH_JOB,
        registry=RunMetrics().registry,
        grouping_key={"creditjob": "monthly", "shard": "0"},
    )
    pushgateway.push_failure("billing", "monthly", 0)
    # a URL without a scheme, as prometheus_client (the runs' push) accepts it
    assert forget_creditjob_groups(pushgateway.url.removeprefix("http://"), "billing", "monthly") == 1
    with urllib.request.urlopen(pushgateway.url + "/api/v1/metrics", timeout=5) as response:
        (left,) = json.load(response)["data"]
    assert left["labels"] == {"job": PUSH_JOB, "creditjob": "monthly", "shard": "0"}
    assert forget_creditjob_groups(pushgateway.url, "billing", "monthly") == 0  # nothing left: a no-op


def test_an_unreachable_pushgateway_is_logged_with_the_manual_command_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="credit_operator"):
        assert forget_creditjob_groups(url, "billing", "monthly") == 0
    (record,) = caplog.records
    assert f"curl -X DELETE {url}/metrics/job/credit-jobs/namespace/billing/creditjob/monthly/shard/<i>" in (
        record.getMessage()
    )
    assert forget_creditjob_groups("", "billing", "monthly") == 0  # no Pushgateway configured: nothing to do
