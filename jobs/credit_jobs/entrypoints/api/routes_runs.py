"""Run routes: trigger a CreditJob (scope `runs`, `202` with a run-now token), read a CreditJob and the run audit
trail (scope `read`), and the seed's `GET|POST /api/distribute-credits` for its existing callers. Included by
`app.create_app`; the run itself is started by `triggers` (annotations or a background worker), never here.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from credit_jobs.adapters import run_audit
from credit_jobs.entrypoints.api.app import require, state_of
from credit_jobs.entrypoints.api.auth import Principal
from credit_jobs.entrypoints.api.errors import ApiError, envelope_ok
from credit_jobs.entrypoints.api.settings import SCOPE_READ, SCOPE_RUNS
from credit_jobs.entrypoints.api.triggers import Accepted

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


@router.get("/api/distribute-credits", status_code=202, operation_id="distribute_credits_get")
@router.post("/api/distribute-credits", status_code=202, operation_id="distribute_credits_post")
def distribute_credits(request: Request, principal: Principal = Depends(require(SCOPE_RUNS))) -> dict[str, Any]:
    """The seed's route: triggers the configured default distribution job (CREDITJOBS_API_DEFAULT_JOB)."""
    state = state_of(request)
    settings = state.config.settings
    accepted = state.triggers.trigger(
        settings.creditjobs_api_default_namespace, settings.creditjobs_api_default_job, None, principal.name
    )
    return _accepted(accepted, principal)


@router.get("/api/v1/namespaces/{namespace}/creditjobs/{name}")
def get_creditjob(
    namespace: Namespace, name: CreditJobName, request: Request, _: Principal = Depends(require(SCOPE_READ))
) -> dict[str, Any]:
    body = state_of(request).triggers.creditjob(namespace, name)
    return envelope_ok(
        {"namespace": namespace, "name": name, "spec": body.get("spec", {}), "status": body.get("status", {})}
    )


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        if isinstance(value, uuid.UUID):
            return str(value)
        if hasattr(value, "isoformat"):
            return value.isoformat()
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    return {key: convert(value) for key, value in row.items()}


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
    return envelope_ok([_jsonable(row) for row in rows])


@router.get("/api/v1/runs/{run_id}")
def get_run(run_id: str, request: Request, _: Principal = Depends(require(SCOPE_READ))) -> dict[str, Any]:
    try:
        parsed = uuid.UUID(run_id)
    except ValueError:
        raise ApiError(422, "invalid_request", f"run id {run_id[:40]!r} is not a UUID") from None
    row = run_audit.get_run(state_of(request).engine, parsed)
    if row is None:
        raise ApiError(404, "not_found", f"no run {parsed}")
    return envelope_ok(_jsonable(row))
