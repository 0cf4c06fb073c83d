"""The HTTP API in cluster mode against kmock and the real operator: a run request through the API sets the run-now
annotations plus `credits.dev/requested-by`, and the operator creates exactly one Job that carries the requester
(CREDITJOB_REQUESTED_BY, recorded by the run in its audit row). The API is the real app (auth, scopes, envelope)
called in process; the database engine is never used by these routes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from operator_kmock_support import (
    CJ_PATH,
    NOW,
    container_env,
    creditjob,
    get,
    jobs_of,
    operator,
    until,
)

from credit_jobs.adapters import database
from credit_jobs.entrypoints.api.app import ApiState, create_app
from credit_jobs.entrypoints.api.settings import load_api_config
from credit_jobs.entrypoints.api.triggers import ClusterTriggers
from credit_operator.cronjob_manifest import manual_job_name
from credit_operator.kube import KubeApi, connect

RUNS_TOKEN = "runs-token-0123456789abcdef0123"
READ_TOKEN = "read-token-0123456789abcdef0123"


def _client(monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("CREDITJOBS_API_TOKENS", f"scheduler:runs:{RUNS_TOKEN}\nreader:read:{READ_TOKEN}")
    monkeypatch.setenv("CREDITJOBS_API_MODE", "cluster")
    engine = database.create_engine("postgresql://unused@127.0.0.1:1/unused")  # never connected by these routes
    state = ApiState(config=load_api_config(), engine=engine, triggers=ClusterTriggers(KubeApi(connect())))
    return TestClient(create_app(state))


async def test_api_trigger_annotates_and_the_operator_creates_one_job_with_the_requester(
    kube: Any, frozen_clock: Callable[[datetime], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen_clock(NOW)
    ns, name = "apins", "monthly"
    client = await asyncio.to_thread(_client, monkeypatch)
    async with operator():
        await kube.post(CJ_PATH.format(ns=ns), json=creditjob(name, ns))
        await until(lambda: get(kube, "cronjobs", ns, name), what="CronJob")
        response = await asyncio.to_thread(
            client.post,
            f"/api/v1/namespaces/{ns}/creditjobs/{name}/runs",
            headers={"Authorization": f"Bearer {RUNS_TOKEN}"},
            json={"periodKey": "2026-10"},
        )
        assert response.status_code == 202, response.text
        token = response.json()["data"]["token"]
        (job,) = await until(lambda: jobs_of(kube, ns, name), what="run-now Job")
        await asyncio.sleep(1.5)  # resync passes: still one Job
        assert len(jobs_of(kube, ns, name)) == 1
        shown = await asyncio.to_thread(
            client.get, f"/api/v1/namespaces/{ns}/creditjobs/{name}", headers={"Authorization": f"Bearer {READ_TOKEN}"}
        )
    annotations = (get(kube, "creditjobs", ns, name) or {})["metadata"]["annotations"]
    assert annotations["credits.dev/run-now"] == token
    assert annotations["credits.dev/requested-by"] == "token:scheduler"
    assert job["metadata"]["name"] == manual_job_name(name, token)
    assert job["metadata"]["annotations"]["credits.dev/requested-by"] == "token:scheduler"
    env = container_env(job)
    assert env["CREDITJOB_REQUESTED_BY"] == "token:scheduler"
    assert env["CREDITJOB_TRIGGER"] == "manual"
    assert env["CREDITJOB_PERIOD_KEY"] == "2026-10"
    assert shown.json()["data"]["spec"]["usecase"] == "distribute-credits"


async def test_api_trigger_errors_in_cluster_mode(kube: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    await kube.post(CJ_PATH.format(ns="apierr"), json=creditjob("monthly", "apierr"))
    client = await asyncio.to_thread(_client, monkeypatch)
    auth = {"Authorization": f"Bearer {RUNS_TOKEN}"}
    missing = await asyncio.to_thread(client.post, "/api/v1/namespaces/apierr/creditjobs/nope/runs", headers=auth)
    bad_key = await asyncio.to_thread(
        client.post, "/api/v1/namespaces/apierr/creditjobs/monthly/runs", headers=auth, json={"periodKey": "2026-W48"}
    )
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert (bad_key.status_code, bad_key.json()["code"]) == (422, "invalid_request")
    annotations = (get(kube, "creditjobs", "apierr", "monthly") or {})["metadata"].get("annotations") or {}
    assert "credits.dev/run-now" not in annotations
