"""void: cancel what is left of one grant (a refunded purchase, a gift given by mistake) with a `void` entry.

The work is the database's `credit_void` (docs/sql-api.md), the one implementation the application's own SQL calls
too: it claims the request id in `credit_requests` (a concurrent retry waits, then replays), then takes the lock
order of consume and expiry (the grant row, then the balance row): the grant's remaining credits go to 0, a `void`
entry records how many were taken and why (the request id), the balance drops by as much. Credits already spent are
not clawed back — the ledger never goes negative. A repeated request id returns the first result; the same id for
another grant is refused. The entry's time is the database's clock; `now=` overrides it for tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from credit_jobs.adapters import ledger_functions
from credit_jobs.domain.requests import validate_grant_id, validate_request_id


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
    with engine.begin() as conn:  # an unknown grant is refused and rolled back: the id stays free
        result = ledger_functions.void(conn, grant_id, request_id, now=now)
    return VoidResult(grant_id, str(result["user_id"]), int(result["voided"]), replayed=bool(result["replayed"]))
