"""void: cancel what is left of one grant (a refunded purchase, a gift given by mistake) with a `void` entry.

One transaction: claim the request id in `credit_requests` (a concurrent retry waits, then replays), then the same
lock order as consume and expiry (the grant row, then the balance row): the grant's remaining credits go to 0, a
`void` entry records how many were taken and why (the request id), the balance drops by as much. Credits already
spent are not clawed back — the ledger never goes negative. A repeated request id returns the first result; the
same id for another grant is refused. The entry's time is the database's clock; `now=` overrides it for tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from credit_jobs.adapters import request_ledger
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.requests import validate_grant_id, validate_request_id
from credit_jobs.usecases.request_claims import claim_or_replay

OPERATION = "void"


@dataclass(frozen=True)
class VoidResult:
    grant_id: int
    user_id: str
    voided: int
    replayed: bool


def void_grant(engine: sa.Engine, grant_id: int, *, request_id: str, now: datetime | None = None) -> VoidResult:
    """Void what is left of `grant_id`, once per `request_id`. `now`: tests only — default is the database's
    `clock_timestamp()`."""
    validate_grant_id(grant_id)
    validate_request_id(request_id)
    params = {"grant_id": grant_id}
    with engine.begin() as conn:
        first = claim_or_replay(conn, request_id=request_id, operation=OPERATION, user_id=None, params=params)
        if first is not None:
            return VoidResult(grant_id, str(first["user_id"]), int(first["voided"]), replayed=True)
        grant = request_ledger.lock_grant(conn, grant_id)
        if grant is None:  # rolls the claim back: the id stays free for a corrected request
            raise ConfigError(f"no grant {grant_id}: see `credit-jobs grants USER` for a user's grant ids")
        if grant.remaining > 0:
            now = now or request_ledger.database_now(conn)
            request_ledger.void_remaining(conn, grant=grant, request_id=request_id, now=now)
        request_ledger.record_result(
            conn,
            request_id=request_id,
            user_id=grant.user_id,
            result={"user_id": grant.user_id, "voided": grant.remaining},
        )
    return VoidResult(grant_id, grant.user_id, grant.remaining, replayed=False)
