"""Run routes: trigger a CreditJob (scope `runs`, `202` with a run-now token), read a CreditJob and the run audit
trail (scope `read`), and the seed's `GET|POST /api/distribute-credits` for its existing callers. The run itself is
started by `triggers` (annotations or a background worker), never here.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from credit_jobs.adapters import run_audit
from credit_jobs.entrypoints.api.auth import Principal
from credit_jobs.entrypoints.api.dependencies import require, state_of
from credit_jobs.entrypoints.api.errors import ApiError, envelope_ok
from credit_jobs.entrypoints.api.settings import SCOPE_READ, SCOPE_RUNS
from credit_jobs.entrypoints.api.triggers import Accepted, RunResult, wait_for
from credit_jobs.entrypoints.json_vocabulary import run_json

router = APIRouter(tags=["runs"])
MAX_RUNS = 500
# Kubernetes' own name rules (RFC 1123): a namespace is a DNS label, a CreditJob name a DNS subdomain. Checked here
# for both modes, so a name no cluster could hold is a 422 — not a queued local run that fails on its audit row, nor
# a path segment passed on to the Kubernetes API.
Namespace = Annotated[
    str, Path(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="A Kubernetes namespace.")
]
CreditJobName = Annotated[
    str,
    Path(
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        description="A CreditJob name (local mode: a usecase name).",
    ),
]


class RunBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    period_key: str | None = Field(default=None, alias="periodKey", max_length=32)


def _accepted(accepted: Accepted, principal: Principal) -> dict[str, Any]:
    return envelope_ok(
        {
            "token": accepted.token,
            "mode": accepted.mode,
            "namespace": accepted.namespace,
            "name": accepted.name,
            "periodKey": accepted.period_key,
            "requestedBy": principal.name,
        }
    )


@router.post("/api/v1/namespaces/{namespace}/creditjobs/{name}/runs", status_code=202)
def trigger_run(
    namespace: Namespace,
    name: CreditJobName,
    request: Request,
    body: Annotated[RunBody | None, Body()] = None,
    principal: Principal = Depends(require(SCOPE_RUNS)),
) -> dict[str, Any]:
    period_key = body.period_key if body else None
    accepted = state_of(request).triggers.trigger(namespace, name, period_key, principal.name)
    return _accepted(accepted, principal)


def _status_url(accepted: Accepted) -> str:
    return f"/api/v1/namespaces/{accepted.namespace}/creditjobs/{accepted.name}/runs/{accepted.token}"


def _result(result: RunResult) -> dict[str, Any]:
    runs = [run_json(run) for run in result.runs]
    first = runs[0] if runs else {}
    return {
        "status": result.status,
        "jobRunId": first.get("jobRunId"),
        "jobRunIds": [run["jobRunId"] for run in runs],
        "periodKey": first.get("periodKey"),
        "stats": first.get("stats") or {},
        "runs": runs,
    }


_STILL_RUNNING: dict[int | str, dict[str, Any]] = {
    202: {"description": "Started and not finished yet (or `?async=true`): follow `statusUrl`."}
}


@router.get("/api/distribute-credits", operation_id="distribute_credits_get", responses=_STILL_RUNNING)
@router.post("/api/distribute-credits", operation_id="distribute_credits_post", responses=_STILL_RUNNING)
def distribute_credits(
    request: Request,
    response: Response,
    run_async: Annotated[bool, Query(alias="async")] = False,
    principal: Principal = Depends(require(SCOPE_RUNS)),
) -> dict[str, Any]:
    """The seed's route: runs the configured default distribution job (CREDITJOBS_API_DEFAULT_JOB) and answers with
    its result, as the template's route did — `200` with the run id and counts, `503 run_failed` (retryable) when it
    failed — after at most CREDITJOBS_API_RUN_WAIT_SECONDS; `202` with a status URL when it is still running then,
    or at once with `?async=true`."""
    state = state_of(request)
    settings = state.config.settings
    accepted = state.triggers.trigger(
        settings.creditjobs_api_default_namespace, settings.creditjobs_api_default_job, None, principal.name
    )
    started = {"token": accepted.token, "statusUrl": _status_url(accepted), "requestedBy": principal.name}
    if run_async:
        response.status_code = 202
        return envelope_ok({**started, "status": "pending"})
    result = wait_for(state.triggers, accepted, state.engine, settings.creditjobs_api_run_wait_seconds)
    if not result.finished:
        response.status_code = 202
        return envelope_ok({**started, **_result(result)})
    if result.status == "failed":
        errors = "; ".join(str(run.get("error")) for run in result.runs if run.get("error")) or "no reason recorded"
        ids = ", ".join(str(run.get("run_id")) for run in result.runs)
        raise ApiError(
            503,
            "run_failed",
            f"run {ids} of {accepted.name} failed: {errors} (retry: a rerun grants only what is missing)",
            retryable=True,
        )
    return envelope_ok({**started, **_result(result)})


@router.get("/api/v1/namespaces/{namespace}/creditjobs/{name}/runs/{token}")
def run_request(
    namespace: Namespace,
    name: CreditJobName,
    token: Annotated[str, Path(max_length=64, pattern=r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")],
    request: Request,
    _: Principal = Depends(require(SCOPE_READ)),
) -> dict[str, Any]:
    """Where a run request stands, by its token: pending, running, or its runs' results."""
    state = state_of(request)
    result = state.triggers.result(namespace, name, token, state.engine)
    if result is None:
        raise ApiError(404, "not_found", f"no run request {token} in this API process (local mode keeps the latest)")
    return envelope_ok({"token": token, **_result(result)})


@router.get("/api/v1/namespaces/{namespace}/creditjobs/{name}")
def get_creditjob(
    namespace: Namespace, name: CreditJobName, request: Request, _: Principal = Depends(require(SCOPE_READ))
) -> dict[str, Any]:
    body = state_of(request).triggers.creditjob(namespace, name)
    return envelope_ok(
        {"namespace": namespace, "name": name, "spec": body.get("spec", {}), "status": body.get("status", {})}
    )


@router.get("/api/v1/runs")
def list_runs(
    request: Request,
    job: Annotated[str | None, Query(max_length=253)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_RUNS)] = 20,
    _: Principal = Depends(require(SCOPE_READ)),
) -> dict[str, Any]:
    if job is not None and not job.isprintable():  # PostgreSQL text cannot hold NUL; no job name holds a control
        raise ApiError(422, "invalid_request", f"job {job[:40]!r} contains control or unprintable characters")
    rows = run_audit.list_runs(state_of(request).engine, limit=limit, job=job)
    return envelope_ok([run_json(row) for row in rows])


@router.get("/api/v1/runs/{run_id}")
def get_run(run_id: str, request: Request, _: Principal = Depends(require(SCOPE_READ))) -> dict[str, Any]:
    try:
        parsed = uuid.UUID(run_id)
    except ValueError:
        raise ApiError(422, "invalid_request", f"run id {run_id[:40]!r} is not a UUID") from None
    row = run_audit.get_run(state_of(request).engine, parsed)
    if row is None:
        raise ApiError(404, "not_found", f"no run {parsed}")
    return envelope_ok(run_json(row))
