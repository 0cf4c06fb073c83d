"""consume: spend a user's credits, soonest-expiring first, under row locks (invariant 4).

A library function (the host application's usage path) and the `credit-jobs consume` command for ops and the
demo. One transaction: lock the user's live grants (grants before the balance row — the same order expiry uses,
so the two never deadlock), plan with the pure `plan_consumption`, apply in one statement. A repeated request id
returns the earlier result instead of consuming twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from credit_jobs.adapters import ledger_sql
from credit_jobs.domain.consumption import plan_consumption
from credit_jobs.domain.errors import ConfigError


@dataclass(frozen=True)
class Consumption:
    user_id: int
    amount: int
    request_id: str
    takes: list[tuple[int, int]]  # (grant id, credits taken)
    replayed: bool


def consume(
    engine: sa.Engine,
    user_id: int,
    amount: int,
    *,
    request_id: str | None = None,
    now: datetime | None = None,
) -> Consumption:
    if amount <= 0:
        raise ConfigError(f"amount must be a positive number of credits, got {amount}")
    request_id = request_id or f"consume-{uuid.uuid4()}"
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        grants = ledger_sql.lock_live_grants(conn, user_id, now)
        already = ledger_sql.consumed_for_request(conn, user_id, request_id)
        if already:
            if already != amount:
                raise ConfigError(
                    f"request id {request_id!r} already consumed {already} credits of user {user_id}, "
                    f"not {amount}: use a new request id"
                )
            return Consumption(user_id, amount, request_id, [], replayed=True)
        takes = plan_consumption(user_id, grants, amount)  # raises InsufficientCredits, nothing written
        ledger_sql.take_from_grants(conn, user_id=user_id, takes=takes, request_id=request_id, now=now)
    return Consumption(user_id, amount, request_id, takes, replayed=False)
