"""consume: spend a user's credits, soonest-expiring first, under row locks (invariant 4), exactly once per request id.

A library function (the host application's usage path) and the `credit-jobs consume` command for ops and the
demo. The work is the database's `credit_consume` (docs/sql-api.md), the one implementation the application's own
SQL calls too: it claims the request id in `credit_requests` (a concurrent retry waits on its unique index, then
replays), locks the user's live grants (grants before the balance row — the order expiry uses, so the two never
deadlock), takes soonest-expiring first and records the result for replays. A reused id with another user or amount
is refused (`RequestIdReused`); a refused consumption (too few credits) rolls back its claim, so a retry after a
top-up can succeed. "Now" is the database's clock; `now=` overrides it for tests that simulate time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from credit_jobs.adapters import ledger_functions
from credit_jobs.adapters.ledger_async import AsyncLedger
from credit_jobs.domain.requests import validate_amount, validate_request_id, validate_user_id


@dataclass(frozen=True)
class Consumption:
    user_id: str
    amount: int
    request_id: str
    takes: list[tuple[int, int]]  # (grant id, credits taken) — on a replay, the first attempt's
    replayed: bool


def consume(
    engine: sa.Engine,
    user_id: str,
    amount: int,
    *,
    request_id: str | None = None,
    now: datetime | None = None,
) -> Consumption:
    """Spend `amount` credits of `user_id`. Without `request_id` a fresh one is generated (no retry protection:
    pass the caller's own id, e.g. an order number, to make retries safe). `now`: tests only — default is the
    database server's `clock_timestamp()`."""
    request_id = _checked(user_id, amount, request_id)
    with engine.begin() as conn:
        result = ledger_functions.consume(conn, user_id, amount, request_id, now=now)
    return _consumption(user_id, amount, request_id, result)


async def consume_async(
    ledger: AsyncLedger, user_id: str, amount: int, *, request_id: str | None = None
) -> Consumption:
    """`consume` for an event loop (the HTTP API): the same checks and SQL function, in one round trip."""
    request_id = _checked(user_id, amount, request_id)
    return _consumption(user_id, amount, request_id, await ledger.consume(user_id, amount, request_id))


def _checked(user_id: str, amount: int, request_id: str | None) -> str:
    validate_user_id(user_id)
    validate_amount(amount)
    return f"consume-{uuid.uuid4()}" if request_id is None else validate_request_id(request_id)


def _consumption(user_id: str, amount: int, request_id: str, result: dict[str, Any]) -> Consumption:
    takes = [(int(g), int(a)) for g, a in result.get("takes") or []]
    return Consumption(user_id, amount, request_id, takes, replayed=bool(result["replayed"]))
