"""Probes: `GET /healthz` (the process serves), `GET /readyz` (database reachable, schema current). Unauthenticated,
for the kubelet; included by `app.create_app`. Metrics are not here: `credit-jobs api` serves them on a port of their
own (CREDITJOBS_API_METRICS_PORT), which Prometheus scrapes and callers of the API need not reach.
A failed readiness check answers a fixed line: the cause, which names the database's user, host and name, is logged
(`api.not_ready`), never sent."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

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
