"""SQL of the per-request ledger operations (consume, one-off grant, void) and of their idempotency claims.

Called by `credit_jobs.usecases.{consume,grant,void_grant}`, every statement inside the caller's transaction.
A request id is claimed first, by `INSERT … ON CONFLICT DO NOTHING` into `credit_requests` (primary key
`request_id`): a concurrent attempt with the same id waits on that unique index until the first commits (its
insert then conflicts and it reads the first result) or rolls back (its insert then succeeds). The claim is the
first lock a request takes — before grant rows and the balance row, which keep the order expiry uses (grants,
then accounts) — and expiry and distribution never touch `credit_requests`, so no cycle of waits can form.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from credit_jobs.domain.consumption import LiveGrant


@dataclass(frozen=True)
class ClaimedRequest:
    """The first use of a request id: what was asked and what it did."""

    operation: str
    params: dict[str, Any]
    result: dict[str, Any]


_JSON_PARAMS = sa.bindparam("params", type_=JSONB)
_JSON_RESULT = sa.bindparam("result", type_=JSONB)


def database_now(conn: sa.Connection) -> datetime:
    """The database server's clock (not the pod's): the one "now" of a request's expiry check and timestamps."""
    value: datetime = conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
    return value


def claim(conn: sa.Connection, *, request_id: str, operation: str, user_id: str | None, params: dict[str, Any]) -> bool:
    """Claim the id for this transaction: True if it is ours, False if a committed request already holds it.

    Blocks while another open transaction holds the same id (the unique index), which is the point."""
    row = conn.execute(
        sa.text(
            """
            INSERT INTO credit_requests (request_id, operation, user_id, params, created_at)
            VALUES (:request_id, :operation, :user_id, :params, clock_timestamp())
            ON CONFLICT (request_id) DO NOTHING
            RETURNING 1
            """
        ).bindparams(_JSON_PARAMS),
        {"request_id": request_id, "operation": operation, "user_id": user_id, "params": params},
    ).one_or_none()
    return row is not None


def first_use(conn: sa.Connection, request_id: str) -> ClaimedRequest:
    """The committed claim of an id that `claim` found taken (READ COMMITTED: this statement sees it)."""
    row = conn.execute(
        sa.text("SELECT operation, params, result FROM credit_requests WHERE request_id = :r"),
        {"r": request_id},
    ).one()
    return ClaimedRequest(row.operation, dict(row.params), dict(row.result or {}))


def record_result(conn: sa.Connection, *, request_id: str, user_id: str | None, result: dict[str, Any]) -> None:
    """Store what the request did, for its replays (same transaction as the claim and the ledger writes)."""
    conn.execute(
        sa.text(
            "UPDATE credit_requests SET result = :result, user_id = coalesce(user_id, :user_id) "
            "WHERE request_id = :request_id"
        ).bindparams(_JSON_RESULT),
        {"request_id": request_id, "user_id": user_id, "result": result},
    )


# --- consume ----------------------------------------------------------------------------------------------------


def lock_live_grants(conn: sa.Connection, user_id: str, now: datetime) -> list[LiveGrant]:
    """The user's spendable grants, soonest-expiring first, row-locked until the transaction ends."""
    rows = conn.execute(
        sa.text(
            """
            SELECT grant_id, remaining, expires_at FROM credit_grants
            WHERE user_id = :user_id AND expired_at IS NULL AND remaining > 0
              AND (expires_at IS NULL OR expires_at > :now)
            ORDER BY expires_at NULLS LAST, grant_id
            FOR UPDATE
            """
        ),
        {"user_id": user_id, "now": now},
    ).all()
    return [LiveGrant(r.grant_id, r.remaining, r.expires_at) for r in rows]


def take_from_grants(
    conn: sa.Connection, *, user_id: str, takes: list[tuple[int, int]], request_id: str, now: datetime
) -> None:
    """Apply a consumption plan: decrement grants, write usage entries, debit the balance — one statement."""
    conn.execute(
        sa.text(
            """
            WITH plan AS (
                SELECT * FROM unnest(CAST(:grant_ids AS bigint[]), CAST(:amounts AS bigint[])) AS t(grant_id, amount)
            ), taken AS (
                UPDATE credit_grants g SET remaining = g.remaining - p.amount
                FROM plan p WHERE g.grant_id = p.grant_id
                RETURNING g.grant_id, p.amount
            ), entries AS (
                INSERT INTO credit_entries (user_id, grant_id, kind, amount, created_at, cause_request_id)
                SELECT :user_id, grant_id, 'usage', amount, :now, :request_id FROM taken
                RETURNING 1
            )
            UPDATE credit_accounts SET balance = balance - (SELECT sum(amount) FROM taken), updated_at = :now
            WHERE user_id = :user_id
            """
        ),
        {
            "grant_ids": [g for g, _ in takes],
            "amounts": [a for _, a in takes],
            "user_id": user_id,
            "now": now,
            "request_id": request_id,
        },
    )


# --- grant ------------------------------------------------------------------------------------------------------


def insert_one_off_grant(
    conn: sa.Connection,
    *,
    user_id: str,
    amount: int,
    grant_type: str,
    idempotency_key: str,
    request_id: str,
    now: datetime,
    expires_in_days: int | None,
) -> int | None:
    """The new grant's id, and the balance credited; None if a grant row already carries this key (one written
    around `credit-jobs`, without a claim — the claim itself is what makes a retry a replay)."""
    row = conn.execute(
        sa.text(
            """
            WITH inserted AS (
                INSERT INTO credit_grants (user_id, grant_type, amount, remaining, granted_at, expires_at,
                                           cause_request_id, idempotency_key)
                VALUES (:user_id, :grant_type, :amount, :amount, :now,
                        CAST(:now AS timestamptz) + CAST(:days AS integer) * interval '24 hours',
                        :request_id, :key)
                ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
                RETURNING grant_id, user_id, amount
            ), credited AS (
                INSERT INTO credit_accounts AS a (user_id, balance, updated_at)
                SELECT user_id, amount, :now FROM inserted
                ON CONFLICT (user_id) DO UPDATE SET balance = a.balance + EXCLUDED.balance,
                                                    updated_at = EXCLUDED.updated_at
                RETURNING 1
            )
            SELECT grant_id FROM inserted
            """
        ),
        {
            "user_id": user_id,
            "grant_type": grant_type,
            "amount": amount,
            "now": now,
            "days": expires_in_days,
            "request_id": request_id,
            "key": idempotency_key,
        },
    ).one_or_none()
    return None if row is None else int(row.grant_id)


def grant_with_key(conn: sa.Connection, idempotency_key: str) -> int:
    return int(
        conn.execute(
            sa.text("SELECT grant_id FROM credit_grants WHERE idempotency_key = :key"), {"key": idempotency_key}
        ).scalar_one()
    )


# --- void -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockedGrant:
    grant_id: int
    user_id: str
    remaining: int


def lock_grant(conn: sa.Connection, grant_id: int) -> LockedGrant | None:
    row = conn.execute(
        sa.text("SELECT grant_id, user_id, remaining FROM credit_grants WHERE grant_id = :g FOR UPDATE"),
        {"g": grant_id},
    ).one_or_none()
    return None if row is None else LockedGrant(int(row.grant_id), str(row.user_id), int(row.remaining))


def void_remaining(conn: sa.Connection, *, grant: LockedGrant, request_id: str, now: datetime) -> None:
    """Empty the (locked) grant, write its `void` entry, debit the balance — one statement."""
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
        {"g": grant.grant_id, "amount": grant.remaining, "now": now, "r": request_id},
    )
