"""Set-based statements of `credit-jobs rollback distribute-credits`: one chunk of a period's grants per transaction.

A chunk picks and locks (grants, then accounts by user id — the global lock order) before it writes, and its writes
must match its pick, or the chunk fails. `rollback_chunk` gives the two statements.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

NOT_VOIDED_SAMPLE = 20  # users whose grant could not be voided in full, named in the report (the count is exact)

_PERIOD_GRANTS = """
    FROM credit_grants g
    WHERE g.grant_family = :grant_family AND g.period_key = :period_key
      AND NOT g.legacy_duplicate AND g.rolled_back_at IS NULL {after} {users}
"""

_PICK = """
WITH picked AS (
    SELECT g.grant_id, g.user_id, g.amount, g.remaining
    {grants}
    ORDER BY g.user_id
    LIMIT :batch
    {lock}
), prior AS (
    -- only grants not whole can carry an earlier void: a whole grant (the common case) costs no probe
    SELECT e.grant_id, sum(e.amount) AS voided FROM credit_entries e
    WHERE e.user_id = ANY(ARRAY(SELECT user_id FROM picked WHERE remaining < amount)) AND e.kind = 'void'
      AND e.grant_id = ANY(ARRAY(SELECT grant_id FROM picked WHERE remaining < amount))
    GROUP BY e.grant_id
), accounts AS (
    SELECT a.user_id FROM credit_accounts a
    WHERE a.user_id = ANY(ARRAY(SELECT user_id FROM picked))
    ORDER BY a.user_id
    {lock}
), rows AS (
    SELECT p.grant_id, p.user_id, p.remaining AS voided,
           CAST(p.amount - p.remaining - coalesce(v.voided, 0) AS bigint) AS kept  -- sum() made it numeric
    FROM picked p LEFT JOIN prior v ON v.grant_id = p.grant_id
)
SELECT (SELECT count(*) FROM accounts) AS accounts,
       (SELECT max(user_id) FROM rows) AS last_user_id,
       coalesce(array_agg(grant_id ORDER BY user_id), '{{}}') AS grant_ids,
       coalesce(array_agg(user_id ORDER BY user_id), '{{}}') AS user_ids,
       coalesce(array_agg(voided ORDER BY user_id), '{{}}') AS voided,
       coalesce(array_agg(kept ORDER BY user_id), '{{}}') AS kept,
       coalesce(jsonb_agg(jsonb_build_object('user_id', user_id, 'grant_id', grant_id, 'kept', kept)
                          ORDER BY user_id) FILTER (WHERE kept > 0), '[]') AS not_voided
FROM rows
"""

# Every row this touches was locked by the pick in the same transaction, so nothing changed since and it never waits.
_APPLY = """
WITH picked AS (
    SELECT * FROM unnest(CAST(:grant_ids AS bigint[]), CAST(:voided AS bigint[]), CAST(:kept AS bigint[]))
        AS t(grant_id, voided, kept)
), rolled AS (
    UPDATE credit_grants g
    SET remaining = 0, rolled_back_at = :now, rollback_run_id = :run_id, rollback_kept = p.kept
    FROM picked p
    -- the = ANY lets the planner probe the primary key; joined to the unnest alone it scans every grant
    WHERE g.grant_id = ANY(CAST(:grant_ids AS bigint[])) AND g.grant_id = p.grant_id
    RETURNING g.grant_id, g.user_id, p.voided
), entries AS (
    INSERT INTO credit_entries (user_id, grant_id, kind, amount, created_at, cause_run_id, reason)
    SELECT user_id, grant_id, 'void', voided, :now, :run_id, :reason FROM rolled WHERE voided > 0
    RETURNING 1
), debited AS (
    -- Each balance drops by its user's picked voids, from the bound arrays (the caller checks that every picked
    -- grant was rolled back and every debit made, or the transaction fails). Not from `rolled`: the planner
    -- estimates `rolled` at batch² / grants in the table (29 rows at 870k grants, 5 after a mid-run autoanalyze),
    -- and on a small estimate it nested-looped the 5000 accounts against the 5000 sums (12.5M comparisons, 2.5 s
    -- instead of 0.06 s per chunk, measured at 1M users). Bound arrays are estimated at their true size. The = ANY
    -- lets the planner probe the primary key; joined to the sums alone it hash-joins a scan of every account per
    -- chunk (quadratic over a whole period: measured 2.9x the distribution at 1M users).
    UPDATE credit_accounts a SET balance = a.balance - s.voided, updated_at = :now
    FROM (SELECT user_id, sum(voided) AS voided
          FROM unnest(CAST(:user_ids AS text[]), CAST(:voided AS bigint[])) AS u(user_id, voided)
          WHERE voided > 0 GROUP BY user_id) s
    WHERE a.user_id = ANY(CAST(:user_ids AS text[])) AND a.user_id = s.user_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM rolled) AS grants,
       (SELECT coalesce(sum(voided), 0) FROM rolled) AS voided,
       (SELECT count(*) FROM entries) AS entries,
       (SELECT count(*) FROM debited) AS debited
"""


@dataclass(frozen=True)
class RollbackChunk:
    last_user_id: str | None  # None: no grants left; else the keyset position (a user id, as the database holds it)
    grants: int
    voided: int  # credits taken back by void entries
    kept: int  # credits the users had already used (or lost to expiry): what could not be voided
    not_voided: list[dict[str, Any]] = field(default_factory=list)  # {user_id, grant_id, kept}, kept > 0
    pick_s: float = 0.0  # wall time of the pick statement (locks included), for the per-chunk debug line
    apply_s: float = 0.0  # wall time of the apply statement (0 in a dry run)


def _grants_sql(after: str | None, users: list[str] | None) -> str:
    return _PERIOD_GRANTS.format(
        after="" if after is None else "AND g.user_id > :after",
        users="" if users is None else "AND g.user_id = ANY(:users)",
    )


def _params(period_key: str, grant_family: str, after: str | None, users: list[str] | None) -> dict[str, object]:
    params: dict[str, object] = {"period_key": period_key, "grant_family": grant_family}
    if after is not None:
        params["after"] = after
    if users is not None:
        params["users"] = users
    return params


def rollback_chunk(
    conn: sa.Connection,
    *,
    period_key: str,
    grant_family: str,
    after: str | None,
    batch: int,
    users: list[str] | None,
    now: datetime,
    run_id: uuid.UUID,
    reason: str,
    dry_run: bool,
) -> RollbackChunk:
    """Roll back up to `batch` of the period's grants after user `after` (None: from the first user). A dry run
    picks the same grants without locking or writing and reports what would change.

    Two statements in one transaction, as expiry's (`ledger_sql.expire_chunk`):
    1. pick: the next `batch` live grants of the period in user-id order (the unique index on (user, family, period)
       is walked from the last user of the previous chunk), `FOR UPDATE` (a rollback must take every grant: a consume
       holding one is waited for, never skipped), their users' accounts locked in user-id order — the global lock
       order (grants, then accounts by user id) — and, for grants not whole, the voids they already carry (a
       `credit-jobs void` before the rollback took those credits back: they were not the user's);
    2. apply: every picked grant's remaining goes to 0 and it is marked rolled back with what the user kept (amount -
       remaining - earlier voids: used or expired), a `void` entry carrying the reason and the run id records what was
       taken, and each balance drops by its users' voided total — one statement of data-modifying CTEs, whose counts
       are checked against the pick (every picked grant rolled back, every void debited, or the chunk fails).

    Rolled-back grants leave the unique index (migration 0008), so the period can be distributed again; distribution
    subtracts `rollback_kept` from the new grant (`ledger_sql.distribute_chunk`).

    User ids are text (`TEXT COLLATE "C"`, migration 0007), bound as they come (never cast to another type in SQL;
    the apply types its list `text[]` for unnest): the keyset position is the last user id of a chunk, and chunks walk
    users in the column's "C" (byte) order — `max(user_id)` and `user_id > :after` use the same order."""
    sql = _PICK.format(grants=_grants_sql(after, users), lock="" if dry_run else "FOR UPDATE")
    started = time.perf_counter()
    picked = conn.execute(sa.text(sql), {**_params(period_key, grant_family, after, users), "batch": batch}).one()
    pick_s = time.perf_counter() - started
    if not picked.grant_ids:
        return RollbackChunk(last_user_id=None, grants=0, voided=0, kept=0, pick_s=pick_s)
    grants, voided, apply_s = len(picked.grant_ids), sum(picked.voided), 0.0
    if not dry_run:
        started = time.perf_counter()
        applied = conn.execute(
            sa.text(_APPLY),
            {
                "grant_ids": list(picked.grant_ids),
                "user_ids": list(picked.user_ids),
                "voided": list(picked.voided),
                "kept": list(picked.kept),
                "now": now,
                "run_id": run_id,
                "reason": reason,
            },
        ).one()
        grants, voided = int(applied.grants), int(applied.voided)
        debits = len({user for user, amount in zip(picked.user_ids, picked.voided, strict=True) if amount > 0})
        if grants != len(picked.grant_ids) or voided != sum(picked.voided) or int(applied.debited) != debits:
            # cannot happen (the pick locked every row the apply writes); raising rolls the chunk back whole
            raise RuntimeError(
                f"rollback chunk after {after!r}: picked {len(picked.grant_ids)} grants ({sum(picked.voided)} to "
                f"void, {debits} balances), applied {grants} ({voided}, {applied.debited} balances)"
            )
        apply_s = time.perf_counter() - started
    return RollbackChunk(
        last_user_id=picked.last_user_id,
        grants=grants,
        voided=voided,
        kept=sum(picked.kept),
        not_voided=list(picked.not_voided),
        pick_s=pick_s,
        apply_s=apply_s,
    )


def first_grant_user_after(
    conn: sa.Connection, *, period_key: str, grant_family: str, after: str | None, users: list[str] | None
) -> tuple[str, int] | None:
    """(user id, grant id) of the grant a rollback chunk of size 1 after `after` covers: names an isolated failure."""
    sql = f"SELECT g.user_id, g.grant_id {_grants_sql(after, users)} ORDER BY g.user_id LIMIT 1"
    row = conn.execute(sa.text(sql), _params(period_key, grant_family, after, users)).one_or_none()
    return None if row is None else (row.user_id, int(row.grant_id))


def count_period_grants(conn: sa.Connection, *, period_key: str, grant_family: str, users: list[str] | None) -> int:
    """How many of the period's grants a rollback would take (for its progress bar)."""
    sql = f"SELECT count(*) {_grants_sql(None, users)}"
    return int(conn.execute(sa.text(sql), _params(period_key, grant_family, None, users)).scalar_one())
