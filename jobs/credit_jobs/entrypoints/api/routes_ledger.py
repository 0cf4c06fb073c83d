"""Ledger routes for the application that spends credits: balance (scope `read`), consume and grants (scope
`ledger`).

They call the library usecases (`usecases.consume`, `usecases.grant`, which call the database's functions, the one
implementation of the money path; consume on the event loop, `consume_async`) and read views
(`adapters.ledger_views`) — no SQL of their own. `Idempotency-Key`
is required on writes and becomes the ledger's request id (consume) or idempotency key (grant): a replay answers the
first result (`replayed: true`, `Idempotent-Replayed: true`), the same key with other parameters `409
idempotency_key_reused`, a grant to a user credit_eligibility does not know `404 unknown_user` (unless
`allowUnknownUser`). Inputs are checked with the domain validators first, answering 422 with the field's rule.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from credit_jobs.adapters import ledger_views
from credit_jobs.domain.errors import ConfigError, InsufficientCredits, NoCreditAccount, RequestIdReused, UnknownUser
from credit_jobs.domain.requests import (
    ONE_OFF_TYPES,
    parse_user_id,
    validate_amount,
    validate_expires_in_days,
    validate_request_id,
)
from credit_jobs.entrypoints.api.auth import Principal
from credit_jobs.entrypoints.api.dependencies import require, state_of
from credit_jobs.entrypoints.api.errors import ApiError, envelope_ok
from credit_jobs.entrypoints.api.settings import SCOPE_LEDGER, SCOPE_READ
from credit_jobs.entrypoints.json_vocabulary import ledger_json
from credit_jobs.usecases.consume import consume_async
from credit_jobs.usecases.grant import grant

router = APIRouter(prefix="/api/v1/users", tags=["ledger"])
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


class ConsumeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: StrictInt


class GrantBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    amount: StrictInt
    type: str = Field(default="gift", description=f"One of: {', '.join(ONE_OFF_TYPES)}.")
    expires_in_days: StrictInt | None = Field(default=None, alias="expiresInDays")
    allow_unknown_user: StrictBool = Field(default=False, alias="allowUnknownUser")


def _bad_input(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except ConfigError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None


def _key(value: str | None) -> str:
    """The Idempotency-Key as the caller wrote it: HTTP hands header bytes over as Latin-1; the key is UTF-8 text,
    as every request id is (an order number in any script), so its bytes are decoded as UTF-8."""
    if value is None:
        raise ApiError(400, "idempotency_key_required", "the Idempotency-Key header is required on ledger writes")
    try:
        text = value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise ApiError(
            422, "invalid_request", "the Idempotency-Key header is not valid UTF-8: send UTF-8 text"
        ) from None
    return str(_bad_input(validate_request_id, text, "idempotency key"))


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


@router.get("/{user}/balance")
def balance(user: str, request: Request, _: Principal = Depends(require(SCOPE_READ))) -> dict[str, Any]:
    user_id = _bad_input(parse_user_id, user)
    ledger = ledger_views.user_ledger(state_of(request).engine, user_id)
    if not ledger.known and not ledger.has_account:
        raise ApiError(404, "unknown_user", f"no user {user_id}: not in credit_eligibility and no credit account")
    return envelope_ok(ledger_json(ledger))


@router.post("/{user}/consume")
async def consume_route(
    user: str,
    body: ConsumeBody,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    _: Principal = Depends(require(SCOPE_LEDGER)),
) -> dict[str, Any]:
    user_id, key = _bad_input(parse_user_id, user), _key(idempotency_key)
    _bad_input(validate_amount, body.amount)
    try:
        result = await consume_async(state_of(request).ledger, user_id, body.amount, request_id=key)
    except NoCreditAccount as exc:
        raise ApiError(404, "no_credit_account", str(exc)) from None
    except InsufficientCredits as exc:
        raise ApiError(409, "insufficient_credits", str(exc)) from None
    except RequestIdReused as exc:
        raise ApiError(409, "idempotency_key_reused", str(exc)) from None
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return envelope_ok(
        {
            "userId": str(user_id),
            "amount": result.amount,
            "idempotencyKey": result.request_id,
            "takes": [{"grantId": str(g), "credits": n} for g, n in result.takes],
            "replayed": result.replayed,
        }
    )


@router.post(
    "/{user}/grants",
    status_code=201,
    responses={200: {"description": "A replay: the first grant.", "content": {"application/json": {}}}},
)
def grant_route(
    user: str,
    body: GrantBody,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKey = None,
    _: Principal = Depends(require(SCOPE_LEDGER)),
) -> dict[str, Any]:
    user_id, key = _bad_input(parse_user_id, user), _key(idempotency_key)
    _bad_input(validate_amount, body.amount)
    _bad_input(validate_expires_in_days, body.expires_in_days)
    if body.type not in ONE_OFF_TYPES:
        raise ApiError(422, "invalid_request", f"type {body.type!r} is not one of {', '.join(ONE_OFF_TYPES)}")
    try:
        result = grant(
            state_of(request).engine,
            user_id,
            body.amount,
            grant_type=body.type,
            idempotency_key=key,
            expires_in_days=body.expires_in_days,
            allow_unknown_user=body.allow_unknown_user,
        )
    except UnknownUser:
        raise ApiError(404, "unknown_user", str(UnknownUser(user_id, "set allowUnknownUser"))) from None
    except RequestIdReused as exc:
        raise ApiError(409, "idempotency_key_reused", str(exc)) from None
    if not result.created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return envelope_ok({"grantId": str(result.grant_id), "userId": str(user_id), "replayed": not result.created})
