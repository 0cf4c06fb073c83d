"""grant: a one-off grant (gift, purchase, manual adjustment), exactly once per idempotency key.

The key is claimed in `credit_requests` (the same namespace as consume and void request ids) in the transaction
that writes the grant: a retry — even one running concurrently — replays the first grant; the same key reused with
any other user, amount, type or `expires_in_days` is refused (`ConfigError`, naming the field). The grant's time
and expiry come from the database's clock; `now=` overrides it for tests that simulate time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from credit_jobs.adapters import request_ledger
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.requests import (
    ONE_OFF_TYPES,
    validate_amount,
    validate_expires_in_days,
    validate_request_id,
    validate_user_id,
)
from credit_jobs.usecases.request_claims import claim_or_replay

OPERATION = "grant"


@dataclass(frozen=True)
class GrantResult:
    grant_id: int
    created: bool  # False: a replay of the first grant with this key


def grant(
    engine: sa.Engine,
    user_id: str,
    amount: int,
    *,
    grant_type: str,
    idempotency_key: str,
    request_id: str | None = None,
    expires_in_days: int | None = None,
    now: datetime | None = None,
) -> GrantResult:
    """Grant `amount` credits to `user_id` once per `idempotency_key`. `request_id` (default: the key) is recorded
    as the grant's cause. `now`: tests only — default is the database server's `clock_timestamp()`."""
    if grant_type not in ONE_OFF_TYPES:
        raise ConfigError(f"grant type {grant_type!r} is not a one-off type: use one of {', '.join(ONE_OFF_TYPES)}")
    validate_user_id(user_id)
    validate_amount(amount)
    validate_expires_in_days(expires_in_days)
    validate_request_id(idempotency_key, "idempotency key")
    if request_id is not None:
        validate_request_id(request_id)
    params: dict[str, int | str | None] = {
        "user_id": user_id,
        "amount": amount,
        "grant_type": grant_type,
        "expires_in_days": expires_in_days,
    }
    with engine.begin() as conn:
        first = claim_or_replay(
            conn,
            request_id=idempotency_key,
            operation=OPERATION,
            user_id=user_id,
            params=params,
            what="idempotency key",
        )
        if first is not None:
            return GrantResult(int(first["grant_id"]), created=False)
        now = now or request_ledger.database_now(conn)
        grant_id = request_ledger.insert_one_off_grant(
            conn,
            user_id=user_id,
            amount=amount,
            grant_type=grant_type,
            idempotency_key=idempotency_key,
            request_id=request_id or idempotency_key,
            now=now,
            expires_in_days=expires_in_days,
        )
        if grant_id is None:  # rolls the claim back too
            existing = request_ledger.grant_with_key(conn, idempotency_key)
            raise ConfigError(
                f"idempotency key {idempotency_key!r} is already on grant {existing}, written without a request "
                "claim (by SQL outside credit-jobs): use a new key"
            )
        request_ledger.record_result(conn, request_id=idempotency_key, user_id=user_id, result={"grant_id": grant_id})
    return GrantResult(grant_id, created=True)
