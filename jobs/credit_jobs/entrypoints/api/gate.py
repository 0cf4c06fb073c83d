"""The request gate: what every protected request passes before anything reads its body — the global rate limit,
authentication (with the failed-authentication budget of whoever it claims to be, from where), and the body's size.

A pure ASGI middleware (`RequestGate`), inside the audit middleware (`app.create_app`), so each refusal is still
audited. An unauthenticated request costs its headers: not one byte of its body is read (`RequestGate._refuse`).
Open paths (probes, metrics, the API docs) pass untouched; `admit` decides who passes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from credit_jobs.entrypoints.api.auth import CHALLENGE, AuthFailure, Principal, attempted_principal, authenticate
from credit_jobs.entrypoints.api.errors import ApiError
from credit_jobs.entrypoints.api.rate_limits import RateLimits, Refusal
from credit_jobs.entrypoints.api.settings import ApiConfig

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


def too_many(refusal: Refusal) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        f"too many requests ({refusal.scope} limit): retry after {refusal.retry_after} s",
        retryable=True,
        headers={"Retry-After": str(refusal.retry_after)},
    )


def admit(config: ApiConfig, limits: RateLimits, headers: dict[str, str], client: str) -> Principal | ApiError:
    """The principal a request proves to be, or the refusal: 429 (the claimed principal's failure budget from this
    address — checked before the credentials are — or the global limit), 401 (no valid credentials).

    The global limit counts authenticated requests only (what reaches the database): a flood of bad credentials is
    held by its own failure budget and can never spend the budget the good callers share (bench/bench_api.py (a1)).

    The failed-authentication budget (`CREDITJOBS_API_RATE_LIMIT_AUTH_FAILURES`, 20 a minute) is kept per client
    address *and* claimed principal (`auth.attempted_principal`): a guesser of one password is held to the budget,
    answered 429 without its guesses being checked, while every other credential from the same address — the app's
    bearer token, another user — goes through.

    `RequestGate` leaves the principal found in the request's state for `app.require`, which applies the principal's
    own rate limit and the route's scope."""
    header = headers.get("authorization")
    budget = f"{client} {attempted_principal(header)}"
    refusal = limits.auth_failures_exhausted(budget)
    if refusal is not None:
        return too_many(refusal)
    found = authenticate(header, config.credentials)
    if isinstance(found, AuthFailure):
        limits.record_auth_failure(budget)
        return ApiError(
            401,
            "unauthorized",
            "authentication required: HTTP Basic or a Bearer token (docs/api.md)",
            headers={"WWW-Authenticate": CHALLENGE},
            auth_reason=found.reason,
        )
    refusal = limits.hit_global()
    if refusal is not None:
        return too_many(refusal)
    return found


class RequestGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        api = scope["app"].state.api
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope["client"][0] if scope.get("client") else "unknown"
        state: dict[str, Any] = scope.setdefault("state", {})
        found = admit(api.config, api.limits, headers, client)
        if isinstance(found, ApiError):
            if found.auth_reason is not None:
                state["auth_reason"] = found.auth_reason
            await self._refuse(found, scope, send)
            return
        state["principal"], state["authenticated"] = found.name, found
        bad_path = _path_problem(scope.get("raw_path") or scope["path"].encode("utf-8"))
        if bad_path is not None:
            await self._refuse(bad_path, scope, send)
            return
        limit = api.config.max_body_bytes
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await self._refuse(_too_large(limit), scope, send)
            return
        await self.app(scope, _counted(receive, limit), send)

    async def _refuse(self, refusal: ApiError, scope: Scope, send: Send) -> None:
        """Routed as usual (the audit line and the metric name the route), but the app is handed an empty body and
        the route's `app.require` raises the refusal: what the client sends is never read.

        An unauthenticated request is answered 401 (or 429) this way, without reading one byte of its body, and a
        connection that keeps sending is closed by the server once the answer is out. An authenticated one may send
        at most `CREDITJOBS_API_MAX_BODY_BYTES` (64 KiB): a `Content-Length` above it is answered 413 the same way, a
        body without one is counted as it arrives and cut off with 413 (`_counted`).
        """
        scope["state"]["refusal"] = refusal
        await self.app(scope, _no_body(), send)


def _path_problem(raw_path: bytes) -> ApiError | None:
    """A path whose percent-decoded bytes are not UTF-8 (`/users/%FF/balance`): refused, never read as `�`."""
    decoded = unquote_to_bytes(raw_path)
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ApiError(
            400,
            "invalid_path",
            f"the request path is not UTF-8 once percent-decoded (byte 0x{decoded[exc.start]:02x} at byte "
            f"{exc.start}): percent-encode UTF-8 text, e.g. encodeURIComponent(userId)",
        )
    return None


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "payload_too_large", f"the request body is over the limit of {limit} bytes (CREDITJOBS_API_MAX_BODY_BYTES)"
    )


def _no_body() -> Receive:
    given = False

    async def empty() -> Message:
        nonlocal given
        if given:
            return {"type": "http.disconnect"}
        given = True
        return {"type": "http.request", "body": b"", "more_body": False}

    return empty


def _counted(receive: Receive, limit: int) -> Receive:
    received = 0

    async def counting() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:  # FastAPI re-raises an HTTPException met while reading the body
                raise HTTPException(413, _too_large(limit).message)
        return message

    return counting
