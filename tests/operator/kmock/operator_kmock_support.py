"""Helpers for the kmock operator tests: run the operator, wait for state, read objects, build CreditJobs.

Imported by the test modules of this folder (a unique basename, since pytest puts the folder on sys.path).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import kopf
from kopf.testing import KopfRunner

# Re-exported for this folder's tests: the manifest they POST (`creditjob(name, namespace, created=..., **spec)`).
from tests.support.creditjobs import creditjob_manifest as creditjob

CJ_PATH = "/apis/credits.dev/v1alpha1/namespaces/{ns}/creditjobs"
JOBS_PATH = "/apis/batch/v1/namespaces/{ns}/jobs"
CRONJOBS_PATH = "/apis/batch/v1/namespaces/{ns}/cronjobs"
MERGE = {"Content-Type": "application/merge-patch+json"}
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)  # the operator's pinned clock (tests.support.instants.NOW's instant)
STARTUP = 1.0  # discovery, initial LIST, WATCH: before this, a created object may reach the operator as its LIST


def fast_settings() -> kopf.OperatorSettings:
    """Kopf settings that keep each operator run short (the defaults wait seconds for idle workers)."""
    settings = kopf.OperatorSettings()
    settings.queueing.idle_timeout = 0.5
    settings.queueing.exit_timeout = 0.5
    settings.watching.reconnect_backoff = 0.05
    settings.posting.default_backoffs = (0.1, 0.2)
    return settings


@asynccontextmanager
async def operator() -> AsyncIterator[KopfRunner]:
    """The real operator in a thread (`kopf run -A --standalone -m credit_operator.handlers`).

    Entered and exited through a worker thread: KopfRunner joins its thread synchronously, and a handler
    blocked on an HTTP call to kmock could never finish while this event loop (which serves kmock) waits.
    """
    runner = KopfRunner(
        ["run", "-A", "--standalone", "-m", "credit_operator.handlers"],
        settings=fast_settings(),
        timeout=30,
    )
    await asyncio.to_thread(runner.__enter__)
    try:
        yield runner
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)
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


def creditjob_status(kube: Any, namespace: str, name: str) -> dict[str, Any]:
    return dict((get(kube, "creditjobs", namespace, name) or {}).get("status") or {})


def condition(kube: Any, namespace: str, name: str, kind: str) -> dict[str, Any]:
    for cond in creditjob_status(kube, namespace, name).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return {}


def reasons(kube: Any, name: str) -> list[str]:
    return [e["reason"] for e in events_for(kube, name)]


def container_env(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def jobs_of(kube: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    return [
        j
        for j in live(kube, "jobs", namespace)
        if (j["metadata"].get("labels") or {}).get("credits.dev/creditjob") == name
    ]


def scheduled_job(cronjob: dict[str, Any], fire_time: str, job_name: str) -> dict[str, Any]:
    """The Job the CronJob controller would create for `fire_time` (what kmock, running no controllers, won't)."""
    template = cronjob["spec"]["jobTemplate"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": cronjob["metadata"]["namespace"],
            "labels": dict(template["metadata"]["labels"]),
            "annotations": {"batch.kubernetes.io/cronjob-scheduled-timestamp": fire_time},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": cronjob["metadata"]["name"],
                    "uid": cronjob["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": template["spec"],
        "status": {"active": 1, "startTime": fire_time},
    }


def finished_status(succeeded: bool, at: str) -> dict[str, Any]:
    """The status the Job controller writes when the pods succeeded / exhausted their retries."""
    if succeeded:
        return {
            "status": {
                "active": 0,
                "succeeded": 1,
                "completionTime": at,
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": at},
                    {"type": "Complete", "status": "True", "lastTransitionTime": at},
                ],
            }
        }
    return {
        "status": {
            "active": 0,
            "failed": 4,
            "conditions": [
                {
                    "type": "FailureTarget",
                    "status": "True",
                    "lastTransitionTime": at,
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                },
                {
                    "type": "Failed",
                    "status": "True",
                    "lastTransitionTime": at,
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                },
            ],
        }
    }


async def finish(kube: Any, ns: str, job: str, succeeded: bool, at: str) -> None:
    """Play the Job controller: the Job ends (succeeded, or failed after its retries) at `at`."""
    await kube.patch(f"{JOBS_PATH.format(ns=ns)}/{job}/status", json=finished_status(succeeded, at), headers=MERGE)


def reconcile_passes() -> float:
    """Successful reconcile passes of the operator in this process so far (its own counter)."""
    from credit_operator import metrics

    return metrics.REGISTRY.get_sample_value("creditjobs_operator_reconcile_total", {"result": "ok"}) or 0.0


def failed_status(reason: str, message: str, pods: int, at: str = "2026-11-28T12:05:00Z") -> dict[str, Any]:
    """A failed Job's status: `PodFailurePolicy` (exit code 2, never retried) or `BackoffLimitExceeded`."""
    return {
        "status": {
            "failed": pods,
            "conditions": [
                {"type": "Failed", "status": "True", "lastTransitionTime": at, "reason": reason, "message": message}
            ],
        }
    }


PERMANENT = failed_status(
    "PodFailurePolicy", "Container credit-jobs for pod x failed with exit code 2 matching FailJob rule at index 0", 1
)
TRANSIENT = failed_status("BackoffLimitExceeded", "Job has reached the specified backoff limit", 4)


async def one_failed_catch_up(kube: Any, ns: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
    """A daily CreditJob created a day ago (its 2026-11-28 period is caught up), whose catch-up Job fails."""
    body = creditjob(
        name, ns, created="2026-11-27T12:00:00Z", schedule="0 3 * * *", period="daily", catchUp={"maxPeriods": 1}
    )
    await kube.post(CJ_PATH.format(ns=ns), json=body)
    (job,) = await until(lambda: [j for j in jobs_of(kube, ns, name) if not j["spec"].get("suspend")], what="run")
    await kube.patch(f"{JOBS_PATH.format(ns=ns)}/{job['metadata']['name']}/status", json=status, headers=MERGE)
    await until(lambda: creditjob_status(kube, ns, name).get("failedPeriods"), what="the period owed")
    return job
