"""Deletions a watch never delivered are noticed within one resync, at the production resync (60 s)
and at a short one.

Seen: only CreditJobs were re-listed at resync, so a CronJob or Job deleted while a watch was down (a reconnect, or
a resume answered 410 Gone after an API server restart) stayed in the operator's cache: the deleted CronJob was never
recreated (scheduled billing stopped), `status.active` kept the deleted Job (the Forbid queue stalled), and a
CreditJob deleted in the gap kept its metric series and Pushgateway groups — until the operator restarted.

The gap is made exactly: the objects are deleted in kmock's store directly, so no DELETED event is ever streamed —
what the operator sees when its watch was down at that moment and resumed past it. Everything else is the real
operator (Kopf and the handlers, in process) against kmock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from operator_kmock_support import (
    CJ_PATH,
    JOBS_PATH,
    NOW,
    STARTUP,
    creditjob,
    creditjob_status,
    get,
    operator,
    scheduled_job,
    until,
)

from credit_operator import metrics

DEFAULT_RESYNC = 60.0


def delete_unseen(kube: Any, plural: str, ns: str, name: str) -> None:
    """Delete an object without a watch event (kmock streams events only for requests through its API)."""
    for key in list(kube.objects):
        if key[0].plural == plural and key[1] == ns and key[2] == name and not kube.objects[key].deleted:
            kube.objects[key].delete()
            return
    raise AssertionError(f"no live {plural} {ns}/{name} to delete")


def series(name: str, ns: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(
        "creditjobs_creditjob_last_success_timestamp_seconds", {"creditjob": name, "namespace": ns}
    )


@pytest.mark.parametrize("resync", [None, 0.5], ids=["default-resync", "short-resync"])
async def test_what_was_deleted_while_a_watch_was_down_is_repaired_within_one_resync(
    kube: Any, frozen_clock: Callable[[datetime], None], monkeypatch: pytest.MonkeyPatch, resync: float | None
) -> None:
    if resync is None:
        monkeypatch.delenv("CREDITJOBS_RESYNC_SECONDS")  # the production default, 60 s
    frozen_clock(NOW)
    ns = f"gap-{'default' if resync is None else 'short'}"
    async with operator():
        await asyncio.sleep(STARTUP)
        for name in ("kept", "doomed"):
            await kube.post(CJ_PATH.format(ns=ns), json=creditjob(name, ns, created="2026-10-15T00:00:00Z"))
        cron = await until(lambda: get(kube, "cronjobs", ns, "kept"), what="the CronJob")
        await until(lambda: series("doomed", ns) == 0, what="the doomed CreditJob's metric series")
        job = "kept-29364480"
        await kube.post(JOBS_PATH.format(ns=ns), json=scheduled_job(cron, "2026-11-01T00:00:00Z", job))
        await until(lambda: job in creditjob_status(kube, ns, "kept").get("active", []), what="the Job active")

        # The watch is down while these three go; it resumes past them (no DELETED event ever arrives).
        delete_unseen(kube, "cronjobs", ns, "kept")
        delete_unseen(kube, "jobs", ns, job)
        delete_unseen(kube, "creditjobs", ns, "doomed")

        within = (resync or DEFAULT_RESYNC) + 30  # one resync, plus a loaded machine's slack
        recreated = await until(lambda: get(kube, "cronjobs", ns, "kept"), timeout=within, what="the CronJob back")
        assert recreated["metadata"]["uid"] != cron["metadata"]["uid"]  # a new one: scheduled billing goes on
        active = lambda: creditjob_status(kube, ns, "kept").get("active", [job])  # noqa: E731
        await until(lambda: job not in active(), timeout=within, what="the queue moved past the deleted Job")
        await until(lambda: series("doomed", ns) is None, timeout=within, what="the deleted CreditJob's series gone")
