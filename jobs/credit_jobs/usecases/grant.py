"""grant: a one-off grant (gift, purchase, manual adjustment) with an idempotency key.

The unique index on `idempotency_key` makes a retried request a no-op; the same key reused for a different user
or amount is refused with a clear error rather than silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from credit_jobs.adapters import ledger_sql
from credit_jobs.domain.errors import ConfigError

ONE_OFF_TYPES = ("gift", "purchase", "adjustment")


@dataclass(frozen=True)
class GrantResult:
    grant_id: int
    created: bool


def grant(
    engine: sa.Engine,
    user_id: int,
    amount: int,
    *,
    grant_type: str,
    idempotency_key: str,
    request_id: str | None = None,
    expires_in_days: int | None = None,
    now: datetime | None = None,
) -> GrantResult:
    if grant_type not in ONE_OFF_TYPES:
        raise ConfigError(f"grant type {grant_type!r} is not a one-off type: use one of {', '.join(ONE_OFF_TYPES)}")
    if amount <= 0:
        raise ConfigError(f"amount must be a positive number of credits, got {amount}")
    if not idempotency_key.strip():
        raise ConfigError("an idempotency key is required so a retried grant is not given twice")
    if expires_in_days is not None and expires_in_days <= 0:
        raise ConfigError(f"expires-in-days must be positive, got {expires_in_days}")
    now = now or datetime.now(UTC)
    expires_at = now + timedelta(days=expires_in_days) if expires_in_days else None
    with engine.begin() as conn:
        grant_id, created, owner, existing_amount = ledger_sql.insert_one_off_grant(
            conn,
            user_id=user_id,
            amount=amount,
            grant_type=grant_type,
            idempotency_key=idempotency_key,
            request_id=request_id or idempotency_key,
            now=now,
            expires_at=expires_at,
        )
    if not created and (owner, existing_amount) != (user_id, amount):
        raise ConfigError(
            f"idempotency key {idempotency_key!r} was already used for {existing_amount} credits to user "
            f"{owner}: use a new key for a different grant"
        )
    return GrantResult(grant_id, created)
