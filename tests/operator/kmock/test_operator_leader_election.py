"""Two real `credit-jobs operator` replicas on kmock at production defaults (15 s lease, 2 s retry, 60 s resync):
exactly one acts, a standby takes over after a SIGKILL or a SIGTERM, a restarted single replica acts again soon.
Before the Lease, both replicas paused each other ("Possibly conflicting operators with the same
priority") and 5 new CreditJobs had no CronJob after 20 s; a restarted replica waited 39-45 s for its own dead
peering record.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from operator_kmock_support import CJ_PATH, creditjob, get, live
from operator_replicas import Replica, requests_by, wait_for

# What the issue asks for after a SIGKILL (a 15 s lease + a 2 s poll + Kopf's start leaves ~2 s of slack).
TAKEOVER_BOUND = 20.0
# A SIGTERM releases the lease: the standby's next poll (2 s) + Kopf's start.
HANDOVER_BOUND = 8.0
# A restarted container of the same pod: start-up (imports, Kopf) only, no lease to wait out.
RESTART_BOUND = 10.0
# New CreditJobs with an active replica: watch event → pass → CronJob (loose: a loaded 2-core machine).
CREATE_BOUND = 10.0


async def create(kube: Any, name: str) -> None:
    await kube.post(CJ_PATH.format(ns="ha"), json=creditjob(name, "ha"))


async def cronjob_within(kube: Any, name: str, timeout: float) -> float:
    started = time.monotonic()
    await wait_for(lambda: get(kube, "cronjobs", "ha", name), timeout, f"CronJob {name}")
    return time.monotonic() - started


def decisions(replica: Replica) -> list[str]:
    return [r["creditjob"] for r in replica.records() if r.get("reason") == "CronJobCreated"]


async def leader_of(*replicas: Replica, timeout: float = 30.0) -> Replica:
    def one() -> Replica | None:
        leading = [r for r in replicas if r.is_leader()]
        assert len(leading) <= 1, [r.name for r in leading]
        return leading[0] if leading else None

    found: Replica = await wait_for(one, timeout, "a leader")
    return found


async def test_two_replicas_one_acts_and_a_standby_takes_over_after_sigkill_and_sigterm(
    kube: Any, tmp_path: Path
) -> None:
    a = await Replica("op-a", tmp_path / "a.log").start()
    b = await Replica("op-b", tmp_path / "b.log").start()
    c = Replica("op-c", tmp_path / "c.log")
    try:
        leader = await leader_of(a, b)
        standby = b if leader is a else a
        # The standby is healthy (its probe must not restart it) and says what it waits for.
        await wait_for(lambda: standby.health()[0] == 200, 10, "the standby's /healthz")
        assert "standby" in standby.health()[1]
        await wait_for(lambda: "standby: the Lease" in standby.text(), 10, "the standby's log line")

        for i in range(5):
            await create(kube, f"new-{i}")
        for i in range(5):
            await cronjob_within(kube, f"new-{i}", CREATE_BOUND)
        assert sorted(decisions(leader)) == [f"new-{i}" for i in range(5)]
        assert decisions(standby) == []
        creators = requests_by(kube, "POST", "/cronjobs")
        assert list(creators.values()) == [5], creators  # one replica, one create each (no 409 races)
        assert leader.name in next(iter(creators))
        posters = requests_by(kube, "POST", "/events")  # every Event is posted by the acting replica
        assert posters
        assert all(leader.name in agent for agent in posters), posters

        # SIGKILL of the active replica (OOM kill, node loss): the standby acts within the bound.
        leader.send(signal.SIGKILL)
        killed = time.monotonic()
        await create(kube, "after-kill")
        await cronjob_within(kube, "after-kill", TAKEOVER_BOUND)
        took_over = time.monotonic() - killed
        assert standby.is_leader()
        print(f"takeover after SIGKILL: {took_over:.1f}s")

        # SIGTERM (a rolling update): the leader releases the lease, a fresh standby acts at once.
        await c.start()
        await wait_for(lambda: "standby: the Lease" in c.text(), 15, "the new replica standing by")
        terminated = time.monotonic()
        code = await standby.stop(signal.SIGTERM)
        await create(kube, "after-term")
        await cronjob_within(kube, "after-term", HANDOVER_BOUND + 5)
        handed_over = time.monotonic() - terminated
        assert code == 0, standby.text()[-2000:]
        assert "released the Lease" in standby.text()
        assert handed_over < HANDOVER_BOUND + 5, handed_over
        print(f"handover after SIGTERM: {handed_over:.1f}s")
        # The CronJob shows in kmock as soon as its POST is served; the replica logs its decision just after: wait
        # for that line before the replicas are killed (on a loaded machine the kill could otherwise come between).
        await wait_for(lambda: decisions(c), 10, "the new leader's CronJobCreated line")
    finally:
        for replica in (a, b, c):
            if replica.process is not None:
                await replica.stop(signal.SIGKILL)
    assert decisions(c) == ["after-term"]


async def test_a_single_replica_restarted_after_sigkill_acts_within_seconds(kube: Any, tmp_path: Path) -> None:
    """A container restart keeps the pod's name (CREDITJOBS_POD_NAME): the new process knows the lease's holder is
    its own dead predecessor and takes it at once instead of waiting out the 15 s lease."""
    first = await Replica("op-solo", tmp_path / "first.log").start()
    second = Replica("op-solo", tmp_path / "second.log")
    try:
        await leader_of(first)
        first.send(signal.SIGKILL)
        assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
        restarted = time.monotonic()
        await second.start()
        await create(kube, "after-restart")
        await cronjob_within(kube, "after-restart", RESTART_BOUND)
        print(f"restart after SIGKILL acts after {time.monotonic() - restarted:.1f}s")
        assert "which no longer renews it" in second.text()
        assert "standby:" not in second.text()  # it did not wait for the lease to expire
    finally:
        for replica in (first, second):
            if replica.process is not None:
                await replica.stop(signal.SIGKILL)


async def test_a_leader_whose_lease_was_taken_stops_at_once(kube: Any, tmp_path: Path) -> None:
    """Whoever holds the Lease acts; a leader that finds another holder at its next renewal exits 1 (it must not act
    beside the new one) instead of renewing over it."""
    replica = await Replica("op-x", tmp_path / "x.log").start()
    try:
        await leader_of(replica)
        (lease,) = live(kube, "leases")
        taken = {"spec": {"holderIdentity": "someone-else_1", "renewTime": lease["spec"]["renewTime"]}}
        await kube.patch(
            f"/apis/coordination.k8s.io/v1/namespaces/default/leases/{lease['metadata']['name']}", json=taken
        )
        assert await replica.stop(signal.SIGCONT, timeout=10) == 1  # SIGCONT: a no-op, only waits for the exit
    finally:
        await replica.stop(signal.SIGKILL)
    assert (
        "no longer the leader (the Lease default/credit-jobs-operator is now held by someone-else_1)" in replica.text()
    )
