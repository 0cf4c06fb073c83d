"""Probes and metrics: `GET /healthz` (the process serves), `GET /readyz` (database reachable, schema current),
`GET /metrics` (Prometheus text). Unauthenticated, for the kubelet and Prometheus; included by `app.create_app`.
A failed readiness check answers a fixed line: the cause, which names the database's user, host and name, is logged
(`api.not_ready`), never sent."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from credit_jobs.adapters import database
from credit_jobs.domain.errors import CreditJobsError
from credit_jobs.entrypoints.api.dependencies import state_of
from credit_jobs.entrypoints.api.errors import envelope_error, envelope_ok

router = APIRouter(tags=["health"])
log = structlog.get_logger()
_NOT_READY = "not ready: the database is unreachable or its schema is not current (the server log says which)"


@router.get("/healthz")
def healthz() -> dict[str, Any]:
    return envelope_ok({"status": "ok"})


@router.get("/readyz", response_model=None)
def readyz(request: Request) -> dict[str, Any] | JSONResponse:
    engine = state_of(request).engine
    try:
        database.verify_connection(engine)
        database.verify_schema(engine)
    except CreditJobsError as exc:
        # the probe is unauthenticated: the cause (which server, database and user) goes to the log only
        log.warning("api.not_ready", reason=str(exc))
        return JSONResponse(envelope_error("not_ready", _NOT_READY, retryable=True), status_code=503)
    return envelope_ok({"status": "ready"})


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}
    },
)
def metrics(request: Request) -> Response:
    return Response(generate_latest(state_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
