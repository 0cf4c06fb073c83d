"""Read-only views of one user's ledger for people: balance, spendable credits, grants — and whether the user exists.

What is spendable is the database's `credit_balance` (the one implementation, docs/sql-api.md), and "now" its
`credit_now()`, as for consume: a grant past its expiry that the expiry job has not reached yet is not spendable,
exactly as `consume` sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True)
class UserLedger:
    user_id: str
    known: bool  # in credit_eligibility (the application's users)
    has_account: bool  # a credit_accounts row exists (created by the first grant)
    balance: int  # the account's balance (includes credits past expiry that expire-credits has not removed yet)
    spendable: int  # what consume can take now: the live grants' remaining credits
    grants: list[dict[str, Any]]  # live grants soonest-expiring first, or every grant (newest first) with `all_grants`
    now: datetime


_GRANT_COLUMNS = """
    grant_id, grant_type, period_key, grant_family, amount, remaining, granted_at, expires_at, expired_at,
    CASE WHEN rolled_back_at IS NOT NULL THEN 'rolled back'
         WHEN remaining > 0 AND expired_at IS NULL AND (expires_at IS NULL OR expires_at > :now) THEN 'live'
         WHEN EXISTS (SELECT 1 FROM credit_entries e WHERE e.grant_id = credit_grants.grant_id AND e.kind = 'void')
              THEN 'voided'
         WHEN remaining = 0 AND expired_at IS NULL THEN 'used up'
         ELSE 'expired' END AS state
"""
# Every state a grant can be in (`state` above), for people and the JSON of `balance`/`grants` (docs/contract.md).
GRANT_STATES = ("live", "used up", "voided", "expired", "rolled back")
_LIVE = "expired_at IS NULL AND remaining > 0 AND (expires_at IS NULL OR expires_at > :now)"


def user_ledger(engine: sa.Engine, user_id: str, *, all_grants: bool = False) -> UserLedger:
    """One user's ledger in one snapshot (REPEATABLE READ: the balance and the grants agree)."""
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        now: datetime = conn.execute(sa.text("SELECT credit_now()")).scalar_one()
        params = {"user_id": user_id, "now": now}
        head = conn.execute(
            sa.text(
                """
                SELECT EXISTS (SELECT 1 FROM credit_eligibility WHERE user_id = :user_id) AS known,
                       (SELECT balance FROM credit_accounts WHERE user_id = :user_id) AS balance,
                       credit_balance(:user_id) AS spendable
                """
            ),
            params,
        ).one()
        where = "user_id = :user_id" + ("" if all_grants else f" AND {_LIVE}")
        order = "granted_at DESC, grant_id DESC" if all_grants else "expires_at NULLS LAST, grant_id"
        rows = conn.execute(
            sa.text(f"SELECT {_GRANT_COLUMNS} FROM credit_grants WHERE {where} ORDER BY {order}"), params
        ).all()
    return UserLedger(
        user_id=user_id,
        known=bool(head.known),
        has_account=head.balance is not None,
        balance=int(head.balance or 0),
        spendable=int(head.spendable),
        grants=[dict(r._mapping) for r in rows],
        now=now,
    )
