"""grant: a one-off grant (gift, purchase, manual adjustment), exactly once per idempotency key.

The work is the database's `credit_grant` (docs/sql-api.md), the one implementation the application's own SQL
calls too. The key is claimed in `credit_requests` (the same namespace as consume and void request ids) in the
transaction that writes the grant: a retry — even one running concurrently — replays the first grant; the same key
reused with any other user, amount, type or validity is refused (`RequestIdReused`, naming the field). A user the
eligibility source does not know is refused (`UnknownUser`) unless `allow_unknown_user`. The validity is relative
(`expires_in_days`, 24-hour days from the grant), so a retry sends the same request; the grant's time comes from the
database's clock, `now=` overrides it for tests that simulate time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from credit_jobs.adapters import ledger_functions
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.requests import (
    ONE_OFF_TYPES,
    validate_amount,
    validate_expires_in_days,
    validate_request_id,
    validate_user_id,
)


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
    expires_in_days: int | None = None,
    allow_unknown_user: bool = False,
    now: datetime | None = None,
) -> GrantResult:
    """Grant `amount` credits to `user_id` once per `idempotency_key` (also recorded as the grant's cause). `now`:
    tests only — default is the database server's `clock_timestamp()`."""
    if grant_type not in ONE_OFF_TYPES:
        raise ConfigError(f"grant type {grant_type!r} is not a one-off type: use one of {', '.join(ONE_OFF_TYPES)}")
    validate_user_id(user_id)
    validate_amount(amount)
    validate_expires_in_days(expires_in_days)
    validate_request_id(idempotency_key, "idempotency key")
    with engine.begin() as conn:
        grant_id, created = ledger_functions.grant(
            conn,
            user_id,
            amount,
            grant_type=grant_type,
            idempotency_key=idempotency_key,
            expires_in_days=expires_in_days,
            allow_unknown_user=allow_unknown_user,
            now=now,
        )
    return GrantResult(grant_id, created=created)
