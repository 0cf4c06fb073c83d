"""Lease expiry under clock skew, at the production timing (15 s lease, 2 s retry), on kmock's API.

Seen: a replica whose clock was 20 s ahead took the Lease from a healthy leader in 1.9 s, and both acted for ~2 s —
expiry was the holder's `renewTime` read against the candidate's wall clock. Now, as client-go: a claim expires once
the candidate has *watched* it stay unchanged for the lease duration, on its own monotonic clock. Two electors run
in-process with wall clocks 40 s apart (leader 20 s behind, candidate 20 s ahead); the Lease is real API state.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from credit_operator.kube import KubeApi, connect
from credit_operator.leader_election import LeaseElector, Timing

T = Timing()  # the production defaults: no shortened lease here


def _skewed(seconds: float) -> Any:
    return lambda: datetime.now(UTC) + timedelta(seconds=seconds)


async def test_a_candidate_whose_clock_runs_ahead_never_takes_the_lease_from_a_healthy_leader(kube: Any) -> None:
    api = KubeApi(await asyncio.to_thread(connect))
    leader = LeaseElector(api, "default", "credit-jobs-operator", "op-0_a", clock=_skewed(-20))
    candidate = LeaseElector(api, "default", "credit-jobs-operator", "op-1_b", clock=_skewed(+20))
    assert await asyncio.to_thread(leader.try_acquire_or_renew)

    # A healthy leader renews every retry period, for longer than one lease duration: the candidate never takes it.
    watched_until = time.monotonic() + T.lease_duration + 3 * T.retry_period
    while time.monotonic() < watched_until:
        await asyncio.sleep(T.retry_period)
        assert await asyncio.to_thread(leader.try_acquire_or_renew)
        assert not await asyncio.to_thread(candidate.try_acquire_or_renew), "took the lease of a healthy leader"

    # The leader stops renewing (dies): the candidate takes over, once the claim stayed unchanged a lease duration.
    last_renewal = time.monotonic()
    while not await asyncio.to_thread(candidate.try_acquire_or_renew):
        assert time.monotonic() - last_renewal < T.lease_duration + 5 * T.retry_period, "never took a dead lease"
        await asyncio.sleep(T.retry_period)
    assert time.monotonic() - last_renewal >= T.lease_duration  # not a moment before the claim ran out
    assert not await asyncio.to_thread(leader.try_acquire_or_renew)  # the old leader, were it back, finds it taken
