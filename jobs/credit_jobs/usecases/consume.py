"""consume: spend a user's credits, soonest-expiring first, under row locks (invariant 4), exactly once per request id.

A library function (the host application's usage path) and the `credit-jobs consume` command for ops and the
demo. One transaction: claim the request id in `credit_requests` (a concurrent retry waits on its unique index,
then replays), lock the user's live grants (grants before the balance row — the same order expiry uses, so the
two never deadlock), plan with the pure `plan_consumption`, apply in one statement, record the result for replays.
A reused id with another user or amount is refused (`ConfigError`); a refused consumption (too few credits) rolls
back its claim, so a retry after a top-up can succeed. "Now" (which grants are past expiry, the entries' time) is
the database's clock; `now=` overrides it for tests that simulate time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from credit_jobs.adapters import ledger_views, request_ledger
from credit_jobs.domain.consumption import plan_consumption
from credit_jobs.domain.errors import NoCreditAccount
from credit_jobs.domain.requests import validate_amount, validate_request_id, validate_user_id
from credit_jobs.usecases.request_claims import claim_or_replay

OPERATION = "consume"


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
    validate_user_id(user_id)
    validate_amount(amount)
    request_id = f"consume-{uuid.uuid4()}" if request_id is None else validate_request_id(request_id)
    params = {"user_id": user_id, "amount": amount}
    with engine.begin() as conn:
        first = claim_or_replay(conn, request_id=request_id, operation=OPERATION, user_id=user_id, params=params)
        if first is not None:
            takes = [(int(g), int(a)) for g, a in first.get("takes", [])]
            return Consumption(user_id, amount, request_id, takes, replayed=True)
        now = now or request_ledger.database_now(conn)
        grants = request_ledger.lock_live_grants(conn, user_id, now)
        if not grants and not ledger_views.has_account(conn, user_id):  # exit 2, not the retry code
            raise NoCreditAccount(user_id, amount)  # rollback: the claim is released, nothing written
        takes = plan_consumption(user_id, grants, amount)  # raises InsufficientCredits: rollback, claim released
        request_ledger.take_from_grants(conn, user_id=user_id, takes=takes, request_id=request_id, now=now)
        request_ledger.record_result(
            conn, request_id=request_id, user_id=user_id, result={"takes": [list(t) for t in takes]}
        )
    return Consumption(user_id, amount, request_id, takes, replayed=False)
