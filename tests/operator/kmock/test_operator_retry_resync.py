"""Owed failed periods and the periodic resync (`CREDITJOBS_RESYNC_SECONDS` shortened to 0.5 s by conftest.py).

The twin of test_operator_periods.py (production defaults, where a watch event makes the operator look again):
here nothing but the resync passes run after the failure, so these prove the resync alone retries a due period
and never retries an exit-code-2 failure.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from operator_kmock_support import (
    NOW,
    PERMANENT,
    TRANSIENT,
    creditjob_status,
    events_for,
    jobs_of,
    one_failed_catch_up,
    operator,
    reconcile_passes,
    until,
)

from credit_operator import metrics


async def test_the_resync_retries_a_due_failed_period(kube: Any, frozen_clock: Callable[[datetime], None]) -> None:
    frozen_clock(NOW)
    ns, name = "resyncretry", "daily"
    async with operator():
        await one_failed_catch_up(kube, ns, name, TRANSIENT)
        frozen_clock(NOW + timedelta(minutes=16))  # the failure was at 12:05: the retry is due at 12:15
        retry = await until(lambda: len(jobs_of(kube, ns, name)) == 2 and jobs_of(kube, ns, name), what="a retry")
        # Running now: no next retry (the status is written at the end of the pass that created the Job).
        (owed,) = await until(
            lambda: [p for p in creditjob_status(kube, ns, name)["failedPeriods"] if p.get("nextRetryTime") is None],
            what="the retry recorded as running",
        )
    keys = [j["metadata"]["annotations"]["credits.dev/period-key"] for j in retry]
    assert keys == ["2026-11-28", "2026-11-28"]
    assert owed["attempts"] == 1


async def test_an_exit_code_2_failure_stays_owed_and_is_never_retried(
    kube: Any, frozen_clock: Callable[[datetime], None]
) -> None:
    frozen_clock(NOW)
    ns, name = "permanent", "daily"
    async with operator():
        await one_failed_catch_up(kube, ns, name, PERMANENT)
        frozen_clock(NOW + timedelta(hours=14))  # long past any backoff, before the next fire (29 Nov 03:00)
        before = reconcile_passes()
        await until(lambda: reconcile_passes() >= before + 6, what="several resync passes")
        assert len(jobs_of(kube, ns, name)) == 1
    (owed,) = creditjob_status(kube, ns, name)["failedPeriods"]
    assert owed["permanent"] is True
    assert owed.get("nextRetryTime") is None
    assert metrics.REGISTRY.get_sample_value("creditjobs_failed_periods", {"creditjob": name, "namespace": ns}) == 1
    (warning,) = [e for e in events_for(kube, name) if e["reason"] == "PeriodFailed"]
    assert "exit code 2" in warning["message"]
    assert "--period-key 2026-11-28" in warning["message"]
