"""Probes and metrics: `GET /healthz` (the process serves), `GET /readyz` (database reachable, schema current),
`GET /metrics` (Prometheus text). Unauthenticated, for the kubelet and Prometheus; included by `app.create_app`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from credit_jobs.adapters import database
from credit_jobs.domain.errors import CreditJobsError
from credit_jobs.entrypoints.api.app import state_of
from credit_jobs.entrypoints.api.errors import envelope_error, envelope_ok

router = APIRouter(tags=["health"])


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
        return JSONResponse(envelope_error("not_ready", str(exc), retryable=True), status_code=503)
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
