"""The FastAPI application: shared state, the auth-and-rate-limit dependency, the audit middleware, error envelopes.

`create_app(state)` builds the app from an `ApiState` holding the configuration, the database engine and the run
triggers. Routes live in `routes_health`, `routes_ledger` and `routes_runs`, which take what they share from
`dependencies` (the routes never import this module). Every protected request first passes the request gate
(`gate.RequestGate`: the global rate limit, the claimed principal's failed-authentication budget from this address,
authentication — 401 with `WWW-Authenticate` — and the body's size limit, all before the body is read); protected routes
then depend on `require(scope)`: the principal's own rate limit (429 with `Retry-After`) and the scope (403). The audit
middleware writes one line per request (principal, route, status, result — never a credential) and counts it in
`creditjobs_api_requests_total`.
Consume runs on the event loop (`adapters.ledger_async`, its own connections); the other routes are sync and
run on anyio's default thread limiter, fixed at start to `settings.WORKER_THREADS`: the request engine's pool holds a
connection for each. A request the database cannot serve in time — a lock or statement
timeout of its transaction (rolled back: nothing written), no free connection — answers a retryable 503.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from credit_jobs import __version__
from credit_jobs.adapters import database
from credit_jobs.domain.limits import MAX_CREDITS
from credit_jobs.entrypoints.api import routes_health, routes_ledger, routes_runs
from credit_jobs.entrypoints.api.dependencies import ApiState as ApiState  # create_app's argument, for its callers
from credit_jobs.entrypoints.api.dependencies import state_of
from credit_jobs.entrypoints.api.errors import ERROR_RESPONSES, ApiError, envelope_error
from credit_jobs.entrypoints.api.gate import RequestGate
from credit_jobs.entrypoints.api.settings import WORKER_THREADS, ApiConfig
from credit_jobs.observability.api_metrics import result_of

log = structlog.get_logger()

_UNPARSED_BODY = "There was an error parsing the body"  # FastAPI's 400 for a body json.loads refuses

# Probes: unauthenticated, not rate limited, audited at debug level only (a probe every few seconds).
QUIET_ROUTES = frozenset({"/healthz", "/readyz"})


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def create_app(state: ApiState) -> FastAPI:
    docs = state.config.settings.creditjobs_api_docs
    app = FastAPI(
        title="credit-jobs",
        version=__version__,
        description="Trigger runs and use the credit ledger over HTTP (docs/api.md).",
        lifespan=_lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.api = state
    for module in (routes_health, routes_ledger, routes_runs):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    _add_error_handlers(app)
    app.add_middleware(RequestGate)  # inside the audit middleware (added last, so outermost): refusals are audited
    app.add_middleware(AuditMiddleware)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The limiter FastAPI runs sync routes on (per event loop): as many threads as the request pool has connections
    # for (settings.REQUEST_POOL), set here rather than trusted to be anyio's default.
    anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
    yield
    api: ApiState = app.state.api
    await api.ledger.close()  # its connections belong to this event loop
    if api.close_on_shutdown:
        api.close()


class AuditMiddleware:
    """One `api.request` line and one `creditjobs_api_requests_total` count per request, whatever became of it (a
    refusal by the gate, an error handler's answer, an exception). Plain ASGI: Starlette's BaseHTTPMiddleware runs
    every request through an extra task and memory streams, a fifth of a consume's CPU in this process."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            _audit(Request(scope), status, started)


def _audit(request: Request, status: int, started: float) -> None:
    route = getattr(request.scope.get("route"), "path", "unmatched")
    result = result_of(status)
    state_of(request).metrics.requests.labels(route=route, result=result).inc()
    fields: dict[str, Any] = {
        "principal": getattr(request.state, "principal", "anonymous"),
        "method": request.method,
        "route": route,
        "status": status,
        "result": result,
        "client": _client(request),
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }
    if reason := getattr(request.state, "auth_reason", None):
        fields["auth_failure"] = reason
    (log.debug if route in QUIET_ROUTES and status < 500 else log.info)("api.request", **fields)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            envelope_error(exc.code, exc.message, retryable=exc.retryable), status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        message = f"invalid request: {where}: {first.get('msg', 'invalid')}"
        return JSONResponse(envelope_error("invalid_request", message, retryable=False), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "invalid_request"
        )
        detail = str(exc.detail)
        if exc.status_code == 400 and detail == _UNPARSED_BODY:  # FastAPI's words: say what and how to fix it
            detail = (
                "the body is not JSON this API can read: malformed, or a number of more than 4300 digits (amounts "
                f'are whole numbers from 1 to {MAX_CREDITS}); send e.g. {{"amount": 25}}'
            )
        return JSONResponse(
            envelope_error(code, detail, retryable=False),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        # Only a lost or unreachable database (or a timeout, a deadlock: OperationalError) is "unavailable". A
        # DataError or IntegrityError means a value got past the API's checks: that is our bug, not an outage, and
        # a 503 would tell the caller to retry a request that can never succeed.
        if not (isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated):
            return _internal_error(exc)
        return _unavailable(_database_message(exc, state_of(request).config), database.sqlstate(exc))

    @app.exception_handler(PoolTimeout)
    async def no_connection(request: Request, exc: PoolTimeout) -> JSONResponse:
        pool = state_of(request).config.request_pool
        return _unavailable(
            f"no database connection came free within {pool.timeout_seconds:g} s (all of this replica's are in use); "
            "nothing was written: retry",
            None,
        )

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        return _internal_error(exc)


def _database_message(exc: DBAPIError, config: ApiConfig) -> str:
    """What the caller is told. A timeout cancelled the request's only transaction: it was rolled back, its
    idempotency claim with it, so a retry with the same Idempotency-Key applies once."""
    line, timeout, timeouts = database.error_line(exc), database.timed_out(exc), config.request_timeouts
    if timeout == "lock":
        return (
            f"{line}: another transaction held a row this request needs for longer than "
            f"CREDITJOBS_API_LOCK_TIMEOUT_SECONDS ({timeouts.lock_seconds:g} s); nothing was written: retry "
            "(with the same Idempotency-Key)"
        )
    if timeout == "statement":
        return (
            f"{line}: the request ran longer than CREDITJOBS_API_STATEMENT_TIMEOUT_SECONDS "
            f"({timeouts.statement_seconds:g} s); nothing was written: retry (with the same Idempotency-Key)"
        )
    return f"the database is unavailable: {line}"


# A database refusal is short-lived (a row lock held past the lock timeout, a deadlock, a full pool, a failover): the
# caller is told to wait this long before its retry, as a 429 tells it how long the rate limit lasts.
DATABASE_RETRY_AFTER_SECONDS = 2


def _unavailable(message: str, sqlstate: str | None) -> JSONResponse:
    log.warning("api.database_error", error=message, sqlstate=sqlstate)
    return JSONResponse(
        envelope_error("database_unavailable", message, retryable=True),
        status_code=503,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )


def _internal_error(exc: Exception) -> JSONResponse:
    # A formatted traceback, not exc_info: the JSON renderer's tracebacks carry each frame's locals, and those
    # include the request's headers — its credentials.
    trace = "".join(traceback.format_exception(exc))
    log.error("api.internal_error", error=f"{type(exc).__name__}: {exc}", traceback=trace[-4000:])
    return JSONResponse(envelope_error("internal_error", "internal error (logged)", retryable=True), status_code=500)
