"""void: cancel what is left of one grant (a refunded purchase, a gift given by mistake) with a `void` entry.

One transaction, the same lock order as consume and expiry (the grant row, then the balance row): the grant's
remaining credits go to 0, a `void` entry records how many were taken and why (the request id), the balance drops
by as much. Credits already spent are not clawed back — the ledger never goes negative. A repeated request id
returns the earlier result.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from credit_jobs.domain.errors import ConfigError


@dataclass(frozen=True)
class VoidResult:
    grant_id: int
    user_id: int
    voided: int
    replayed: bool


def void_grant(engine: sa.Engine, grant_id: int, *, request_id: str, now: datetime | None = None) -> VoidResult:
    if not request_id.strip():
        raise ConfigError("a request id is required so a retried void is not applied twice")
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        grant = conn.execute(
            sa.text("SELECT grant_id, user_id, remaining FROM credit_grants WHERE grant_id = :g FOR UPDATE"),
            {"g": grant_id},
        ).one_or_none()
        if grant is None:
            raise ConfigError(f"no grant {grant_id}: see the user's grants in credit_grants")
        earlier = conn.execute(
            sa.text(
                "SELECT amount FROM credit_entries WHERE grant_id = :g AND kind = 'void' AND cause_request_id = :r"
            ),
            {"g": grant_id, "r": request_id},
        ).scalar_one_or_none()
        if earlier is not None:
            return VoidResult(grant_id, grant.user_id, int(earlier), replayed=True)
        if grant.remaining == 0:
            return VoidResult(grant_id, grant.user_id, 0, replayed=False)
        conn.execute(
            sa.text(
                """
                WITH emptied AS (
                    UPDATE credit_grants SET remaining = 0 WHERE grant_id = :g RETURNING user_id
                ), entry AS (
                    INSERT INTO credit_entries (user_id, grant_id, kind, amount, created_at, cause_request_id)
                    SELECT user_id, :g, 'void', :amount, :now, :r FROM emptied
                )
                UPDATE credit_accounts SET balance = balance - :amount, updated_at = :now
                WHERE user_id = (SELECT user_id FROM emptied)
                """
            ),
            {"g": grant_id, "amount": grant.remaining, "now": now, "r": request_id},
        )
    return VoidResult(grant_id, grant.user_id, int(grant.remaining), replayed=False)
