"""Helpers for the kmock operator tests: run the operator, wait for state, read objects, build CreditJobs.

Imported by the test modules of this folder (a unique basename, since pytest puts the folder on sys.path).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import kopf
from kopf.testing import KopfRunner

CJ_PATH = "/apis/credits.dev/v1alpha1/namespaces/{ns}/creditjobs"
JOBS_PATH = "/apis/batch/v1/namespaces/{ns}/jobs"
CRONJOBS_PATH = "/apis/batch/v1/namespaces/{ns}/cronjobs"


def fast_settings() -> kopf.OperatorSettings:
    """Kopf settings that keep each operator run short (the defaults wait seconds for idle workers)."""
    settings = kopf.OperatorSettings()
    settings.queueing.idle_timeout = 0.5
    settings.queueing.exit_timeout = 0.5
    settings.watching.reconnect_backoff = 0.05
    settings.posting.default_backoffs = (0.1, 0.2)
    return settings


@contextmanager
def operator() -> Iterator[KopfRunner]:
    """The real operator in a thread (`kopf run -A --standalone -m credit_operator.handlers`)."""
    runner = KopfRunner(
        ["run", "-A", "--standalone", "-m", "credit_operator.handlers"],
        settings=fast_settings(),
        timeout=30,
    )
    with runner:
        yield runner
    assert runner.exception is None, runner.output


async def until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    for _ in range(int(timeout / 0.05)):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)  # never time.sleep: kmock serves from this same loop
    raise AssertionError(f"{what} not reached in {timeout}s")


def live(kube: Any, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """Live objects of one plural (kmock keeps deleted ones as soft-deleted history)."""
    return [
        kube.objects[key].raw
        for key in list(kube.objects)
        if key[0].plural == plural and not kube.objects[key].deleted and (namespace is None or key[1] == namespace)
    ]


def get(kube: Any, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    for obj in live(kube, plural, namespace):
        if obj["metadata"]["name"] == name:
            return obj
    return None


def events_for(kube: Any, name: str) -> list[dict[str, Any]]:
    return [e for e in live(kube, "events") if (e.get("involvedObject") or {}).get("name") == name]


def creditjob(name: str, namespace: str = "default", created: str | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if created:
        meta["creationTimestamp"] = created
    return {
        "apiVersion": "credits.dev/v1alpha1",
        "kind": "CreditJob",
        "metadata": meta,
        "spec": {"usecase": "distribute-credits", "schedule": "0 0 1 * *", **spec},
    }
