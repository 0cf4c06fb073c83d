"""What every route depends on: the API's shared state (`ApiState`, held by the app) and `require(scope)`, the
dependency that hands a route its authenticated principal. The routes import this module, never `app`: the app
imports the routes (one way)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from fastapi import Request

from credit_jobs.adapters.ledger_async import AsyncLedger
from credit_jobs.entrypoints.api.auth import Principal
from credit_jobs.entrypoints.api.errors import ApiError
from credit_jobs.entrypoints.api.gate import too_many
from credit_jobs.entrypoints.api.rate_limits import RateLimits
from credit_jobs.entrypoints.api.settings import ApiConfig
from credit_jobs.entrypoints.api.triggers import Triggers
from credit_jobs.observability.api_metrics import ApiMetrics


@dataclass
class ApiState:
    config: ApiConfig
    engine: sa.Engine
    triggers: Triggers
    limits: RateLimits = field(init=False)
    ledger: AsyncLedger = field(init=False)  # consume's async connections, beside the engine's pool
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    close_on_shutdown: bool = False  # a served process's own state: the app's lifespan closes it when the server stops

    def __post_init__(self) -> None:
        self.limits = RateLimits(self.config.rate_global, self.config.rate_client, self.config.rate_auth_failures)
        self.ledger = AsyncLedger(self.engine, self.config.request_pool)

    def close(self) -> None:
        """Queued local runs dropped, the running one finished; the request engine's connections closed."""
        self.triggers.close()
        self.engine.dispose()


def state_of(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


def require(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the principal the request gate authenticated (`gate.RequestGate`, before the body was read),
    within its own rate limit and holding `scope` — or the refusal as an ApiError. Async: it only counts in memory,
    and FastAPI would hand a sync dependency to a worker thread of its own, a second thread hop per request."""

    async def dependency(request: Request) -> Principal:
        gate_refusal: ApiError | None = getattr(request.state, "refusal", None)
        if gate_refusal is not None:  # the gate's: 401, 429 or 413, decided before the body was read
            raise gate_refusal
        found: Principal = request.state.authenticated
        refusal = state_of(request).limits.hit_client(found.name)
        if refusal is not None:
            raise too_many(refusal)
        if scope not in found.scopes:
            raise ApiError(403, "forbidden", f"the credential {found.name} lacks the {scope!r} scope")
        return found

    return dependency
