"""`credit-jobs operator` as the README runs it locally, on a fresh cluster without any of the chart's objects, and
on a cluster where it cannot use its leader Lease.

A fresh cluster needs nothing but the CreditJob CRD: the operator creates its Lease and acts. Where the Lease cannot
be read or written (RBAC, no Lease API), nobody acts — the operator must say so within seconds (what is missing, the
fixes), repeat it while it lasts, show it in `creditjobs_operator_paused`, keep /healthz healthy (a restart would
not help), and act as soon as the Lease works.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from operator_kmock_support import CJ_PATH, creditjob, get, live
from operator_replicas import Replica, wait_for

from credit_operator.leader_election import PAUSED_WARNING_INTERVAL

FIRST_WARNING_BOUND = 10.0


async def test_the_readme_command_acts_on_a_fresh_cluster(kube: Any, tmp_path: Path) -> None:
    replica = await Replica("local", tmp_path / "operator.log").start()
    try:
        await kube.post(CJ_PATH.format(ns="dev"), json=creditjob("mine", "dev"))
        await wait_for(lambda: get(kube, "cronjobs", "dev", "mine"), 15, "the CronJob")
        (lease,) = live(kube, "leases", "default")  # outside a pod the Lease lives in `default`
        assert lease["metadata"]["name"] == "credit-jobs-operator"
        assert lease["spec"]["holderIdentity"].startswith("local_")
    finally:
        code = await replica.stop(signal.SIGTERM)
    assert code == 0, replica.text()[-2000:]
    assert not live(kube, "leases", "default")[0]["spec"].get("holderIdentity")  # released on the way out


async def test_an_unusable_lease_is_reported_repeatedly_and_shown_in_a_metric(kube: Any, tmp_path: Path) -> None:
    kube.forbidden = {"leases"}  # the chart's RBAC for leases is missing
    replica = await Replica("op", tmp_path / "operator.log").start()

    def warnings() -> list[dict[str, Any]]:
        return [r for r in replica.records() if "operator is PAUSED" in r.get("event", "")]

    try:
        await wait_for(warnings, FIRST_WARNING_BOUND, "the first warning")
        (first,) = warnings()
        assert first["level"] == "warning"
        assert "Lease default/credit-jobs-operator" in first["event"]
        assert "403" in first["event"]
        assert "leases (coordination.k8s.io) in namespace 'default'" in first["event"]
        assert "install the chart" in first["event"]
        assert "--standalone" in first["event"]
        await wait_for(lambda: replica.metric("creditjobs_operator_paused") == "1.0", 5, "paused 1")
        assert replica.metric("creditjobs_operator_leader") == "0.0"
        assert replica.health()[0] == 200  # a restart would not help: the liveness probe must not fire
        await kube.post(CJ_PATH.format(ns="dev"), json=creditjob("waiting", "dev"))
        await wait_for(lambda: len(warnings()) >= 2, PAUSED_WARNING_INTERVAL + 10, "the repeated warning")
        assert not get(kube, "cronjobs", "dev", "waiting")  # paused indeed

        kube.forbidden = set()  # the fix: the RBAC is there
        await wait_for(lambda: get(kube, "cronjobs", "dev", "waiting"), 15, "the CronJob after the fix")
        assert replica.metric("creditjobs_operator_paused") == "0.0"
        assert replica.is_leader()
        count = len(warnings())
    finally:
        code = await replica.stop(signal.SIGTERM)
    assert count == len(warnings())  # no warning after the fix
    assert code == 0, replica.text()[-2000:]


async def test_inconsistent_lease_timing_is_refused_with_exit_2_and_nothing_written(kube: Any, tmp_path: Path) -> None:
    replica = Replica("bad", tmp_path / "operator.log", extra_env={"CREDITJOBS_LEASE_RENEW_DEADLINE_SECONDS": "20"})
    await replica.start()
    assert replica.process is not None
    code = await replica.process.wait()
    (line,) = replica.text().splitlines()
    assert code == 2
    assert line.startswith("credit-jobs: error: invalid operator settings: CREDITJOBS_LEASE_RETRY_SECONDS <"), line
    assert "(got 2, 20, 15)" in line
    assert not live(kube, "leases")
    assert not [r for r in list(kube) if r.method.value != "GET"]  # not a single write
