"""Set-based ledger statements: one SQL statement per chunk of users or grants, never a query per user.

Each statement runs inside the caller's transaction; each chunk statement is a chain of data-modifying CTEs, so the
grant rows, the balance upsert and the counts commit together. Lock order: every statement that writes
`credit_accounts` for many users locks the account rows in user-id order, so overlapping runs wait for each other
instead of deadlocking; a deadlock that still happens is retried by `usecases.chunk_runner`.
- distribute: `INSERT … SELECT … ON CONFLICT DO NOTHING` (the unique index on (user, grant family, period), not a
  prior SELECT, makes a grant exactly-once; a conflicting row costs one index probe and no heap write, which keeps a
  rerun cheap — a NOT EXISTS anti-join before it measured slower on first runs and no faster on reruns), then the
  balances of the users actually granted are upserted from the RETURNING rows; both are fed ORDER BY user id. A
  late grant's expiry counts from the grant time (`domain.grant_rules.grant_expiry`).
- expire: `SELECT … FOR UPDATE SKIP LOCKED` picks live expired grants (never waiting for one) and locks their users'
  accounts ORDER BY user id, then `UPDATE … FROM` empties them, expiry entries are written and balances reduced — two
  overlapping runs never touch the same grant (invariant 3).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from credit_jobs.domain.grant_rules import DEFAULT_GRANT_FAMILY
from credit_jobs.domain.sharding import Shard

UNCONFIGURED_SAMPLE = 5


def shard_predicate(column: str, shard: Shard) -> str:
    """`column`'s shard test: `credit_shard_hash` (migration 0007, the same function as `domain.sharding.shard_hash`)
    is an inlinable IMMUTABLE SQL function over md5, stable across PostgreSQL versions."""
    if shard.count == 1:
        return ""
    return f" AND credit_shard_hash({column}) % :shard_count = :shard_index"


def shard_params(shard: Shard) -> dict[str, int]:
    return {"shard_count": shard.count, "shard_index": shard.index}


@dataclass(frozen=True)
class DistributeChunk:
    last_user_id: str | None  # None: no users left
    seen: int
    banned: int
    inactive: int
    eligible: int
    configured: int
    granted: int
    credits: int
    unconfigured_sample: list[str]
    unconfigured_plans: list[str]
    covered_by_kept: int = 0  # a redo after a rollback: users who kept the period's amount already (nothing more)

    @property
    def unconfigured(self) -> int:
        return self.eligible - self.configured

    @property
    def already_granted(self) -> int:
        return self.configured - self.granted - self.covered_by_kept


_DISTRIBUTE_CHUNK = """
WITH chunk AS (
    SELECT e.user_id, e.plan_code, e.is_banned, (e.status = 'active' OR e.is_lifetime) AS is_active
    FROM credit_eligibility e
    WHERE e.user_id > :after {shard}
    ORDER BY e.user_id
    LIMIT :batch
), eligible AS (
    SELECT c.user_id, c.plan_code FROM chunk c WHERE c.is_active AND NOT c.is_banned
), kept AS (
    -- a redo after `credit-jobs rollback`: what each user kept from the period's rolled-back grants counts against
    -- the new grant (docs/credits-lifecycle.md, "Rolling a period back"); probes a partial index that is empty
    -- until a rollback, so a plain distribution pays one empty index probe per chunk
    SELECT r.user_id, sum(r.rollback_kept) AS credits FROM credit_grants r
    WHERE r.user_id = ANY(ARRAY(SELECT user_id FROM eligible)) AND r.rolled_back_at IS NOT NULL
      AND r.grant_family = :grant_family AND r.period_key = :period_key
    GROUP BY r.user_id
), candidates AS (
    SELECT e.user_id, p.grant_type, p.credits_per_period - coalesce(k.credits, 0) AS credits, p.expiry_days,
           coalesce(k.credits, 0) AS kept
    FROM eligible e JOIN plan_credit_policies p ON p.plan_code = e.plan_code AND p.active
    LEFT JOIN kept k ON k.user_id = e.user_id
), {write}
SELECT
    (SELECT max(user_id) FROM chunk) AS last_user_id,
    (SELECT count(*) FROM chunk) AS seen,
    (SELECT count(*) FROM chunk WHERE is_banned) AS banned,
    (SELECT count(*) FROM chunk WHERE NOT is_active AND NOT is_banned) AS inactive,
    (SELECT count(*) FROM eligible) AS eligible,
    (SELECT count(*) FROM candidates) AS configured,
    (SELECT count(*) FROM candidates WHERE credits <= 0) AS covered_by_kept,
    (SELECT count(*) FROM inserted) AS granted,
    (SELECT coalesce(sum(amount), 0) FROM inserted) AS credits,
    (SELECT coalesce(array_agg(user_id ORDER BY user_id), '{{}}') FROM (
        SELECT e.user_id FROM eligible e
        WHERE NOT EXISTS (SELECT 1 FROM candidates c WHERE c.user_id = e.user_id)
        ORDER BY e.user_id LIMIT {sample}) s) AS unconfigured_sample,
    (SELECT coalesce(array_agg(DISTINCT e.plan_code), '{{}}') FROM eligible e
        WHERE NOT EXISTS (SELECT 1 FROM candidates c WHERE c.user_id = e.user_id)) AS unconfigured_plans
"""

_DISTRIBUTE_WRITE = """
inserted AS (
    INSERT INTO credit_grants (user_id, grant_type, grant_family, period_key, amount, remaining, granted_at,
                               expires_at, cause_run_id, kept_earlier)
    SELECT user_id, grant_type, :grant_family, :period_key, credits, credits, :now,
           -- late grant (its period's validity already over when written): valid expiry_days from now instead.
           -- Days of 24 hours: `interval '1 day'` would count calendar days in the session's TimeZone, an hour off
           -- across a DST change on a server that is not set to UTC.
           CASE WHEN CAST(:period_start AS timestamptz) + expiry_days * interval '24 hours' > CAST(:now AS timestamptz)
                THEN CAST(:period_start AS timestamptz) + expiry_days * interval '24 hours'
                ELSE CAST(:now AS timestamptz) + expiry_days * interval '24 hours' END,
           :run_id, kept
    FROM candidates
    WHERE credits > 0  -- a redo after a rollback: a user who kept the policy amount already gets nothing more
    ORDER BY user_id, grant_type  -- lock order: user id (see the module docstring)
    -- one periodic grant per (user, grant family, period), whatever the grant type: a plan change mid-period
    -- never adds a second grant on a rerun (rows flagged legacy_duplicate by migration 0006 and grants rolled back
    -- are outside the index)
    ON CONFLICT (user_id, grant_family, period_key) WHERE period_key IS NOT NULL AND NOT legacy_duplicate
        AND rolled_back_at IS NULL DO NOTHING
    RETURNING user_id, amount
), credited AS (
    INSERT INTO credit_accounts AS a (user_id, balance, updated_at)
    SELECT user_id, sum(amount), :now FROM inserted GROUP BY user_id
    ORDER BY user_id  -- lock order: user id (see the module docstring)
    ON CONFLICT (user_id) DO UPDATE SET balance = a.balance + EXCLUDED.balance, updated_at = EXCLUDED.updated_at
    RETURNING 1
)"""

# Dry run: what would be inserted (candidates without this period's grant), with nothing written.
_DISTRIBUTE_PREVIEW = """
inserted AS (
    SELECT c.user_id, c.credits AS amount FROM candidates c
    WHERE NOT EXISTS (
        SELECT 1 FROM credit_grants g
        WHERE g.user_id = c.user_id AND g.grant_family = :grant_family AND g.period_key = :period_key
          AND NOT g.legacy_duplicate AND g.rolled_back_at IS NULL)
      AND c.credits > 0)"""


def distribute_chunk(
    conn: sa.Connection,
    *,
    after: str,
    batch: int,
    shard: Shard,
    period_key: str,
    period_start: datetime,
    now: datetime,
    run_id: uuid.UUID,
    dry_run: bool,
    grant_family: str = DEFAULT_GRANT_FAMILY,
) -> DistributeChunk:
    sql = _DISTRIBUTE_CHUNK.format(
        shard=shard_predicate("e.user_id", shard),
        write=_DISTRIBUTE_PREVIEW if dry_run else _DISTRIBUTE_WRITE,
        sample=UNCONFIGURED_SAMPLE,
    )
    params: dict[str, object] = {
        "after": after,
        "batch": batch,
        "period_key": period_key,
        "grant_family": grant_family,
        **shard_params(shard),
    }
    if not dry_run:
        params.update(period_start=period_start, now=now, run_id=run_id)
    row = conn.execute(sa.text(sql), params).one()
    return DistributeChunk(
        last_user_id=row.last_user_id,
        seen=row.seen,
        banned=row.banned,
        inactive=row.inactive,
        eligible=row.eligible,
        configured=row.configured,
        granted=row.granted,
        covered_by_kept=row.covered_by_kept,
        credits=int(row.credits),
        unconfigured_sample=list(row.unconfigured_sample),
        unconfigured_plans=sorted(row.unconfigured_plans),
    )


def count_users(conn: sa.Connection, shard: Shard) -> int:
    sql = "SELECT count(*) FROM credit_eligibility e WHERE true" + shard_predicate("e.user_id", shard)
    return int(conn.execute(sa.text(sql), shard_params(shard)).scalar_one())


def first_user_after(conn: sa.Connection, *, after: str, shard: Shard) -> str | None:
    """The one user a distribute chunk of size 1 after `after` covers (names the user a failing chunk isolated)."""
    sql = (
        "SELECT e.user_id FROM credit_eligibility e WHERE e.user_id > :after"
        + shard_predicate("e.user_id", shard)
        + " ORDER BY e.user_id LIMIT 1"
    )
    found = conn.execute(sa.text(sql), {"after": after, **shard_params(shard)}).scalar_one_or_none()
    return None if found is None else str(found)


@dataclass(frozen=True)
class ExpireChunk:
    grants: int
    credits: int
    users: int
    # keyset position of the last grant picked: the next chunk starts after it
    last_expires_at: datetime | None = None
    last_grant_id: int | None = None


_DUE_GRANTS = """
    WHERE g.expired_at IS NULL AND g.remaining > 0 AND g.expires_at <= :now
      AND (g.expires_at, g.grant_id) > (CAST(:after_expires_at AS timestamptz), CAST(:after_grant_id AS bigint))
      {shard}
    ORDER BY g.expires_at, g.grant_id"""

# Keyset over the partial index (expires_at, grant_id): each chunk starts where the previous one stopped, so a run
# reads each due grant once (linear), instead of re-sorting or re-skipping what earlier chunks already expired.
# Step 1 picks the chunk's grants (SKIP LOCKED: another run's grants are left to it, never waited for) and locks
# the accounts it will reduce in user-id order — the global lock order — before anything is written.
_EXPIRE_PICK = """
WITH picked AS (
    SELECT g.grant_id, g.user_id, g.remaining, g.expires_at FROM credit_grants g
    {due}
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
), accounts AS (
    SELECT a.user_id FROM credit_accounts a
    -- = ANY(ARRAY(…)), not IN (SELECT …): the planner then probes the primary key for the chunk's users instead of
    -- hash-joining a sequential scan of every account (measured: 75 ms of a 100 ms chunk at 265k accounts)
    WHERE a.user_id = ANY(ARRAY(SELECT user_id FROM picked))
    ORDER BY a.user_id
    FOR UPDATE
), last AS (
    SELECT expires_at, grant_id FROM picked ORDER BY expires_at DESC, grant_id DESC LIMIT 1
)
SELECT (SELECT coalesce(array_agg(grant_id ORDER BY grant_id), '{{}}') FROM picked) AS grant_ids,
       (SELECT coalesce(array_agg(remaining ORDER BY grant_id), '{{}}') FROM picked) AS amounts,
       (SELECT count(*) FROM accounts) AS accounts,
       (SELECT expires_at FROM last) AS last_expires_at,
       (SELECT grant_id FROM last) AS last_grant_id
"""

# Step 2 writes: every row it touches is already locked by step 1, so it never waits (and what a locked grant holds
# cannot have changed since step 1 read it, so the amounts come from there: no second read of the grants).
_EXPIRE_APPLY = """
WITH picked AS (
    SELECT * FROM unnest(CAST(:grant_ids AS bigint[]), CAST(:amounts AS bigint[])) AS t(grant_id, amount)
), expired AS (
    UPDATE credit_grants g SET remaining = 0, expired_at = :now
    FROM picked p
    -- the = ANY lets the planner probe the primary key; joined to the unnest alone it scans every grant
    WHERE g.grant_id = ANY(CAST(:grant_ids AS bigint[])) AND g.grant_id = p.grant_id
    RETURNING g.grant_id, g.user_id, p.amount
), entries AS (
    INSERT INTO credit_entries (user_id, grant_id, kind, amount, created_at, cause_run_id)
    SELECT user_id, grant_id, 'expiry', amount, :now, :run_id FROM expired
    RETURNING 1
), debited AS (
    UPDATE credit_accounts a SET balance = a.balance - s.amount, updated_at = :now
    FROM (SELECT user_id, sum(amount) AS amount FROM expired GROUP BY user_id) s
    WHERE a.user_id = s.user_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM expired) AS grants,
       (SELECT coalesce(sum(amount), 0) FROM expired) AS credits,
       (SELECT count(DISTINCT user_id) FROM expired) AS users
"""

_EXPIRE_PREVIEW = """
SELECT count(*) AS grants, coalesce(sum(g.remaining), 0) AS credits, count(DISTINCT g.user_id) AS users
FROM credit_grants g
WHERE g.expired_at IS NULL AND g.remaining > 0 AND g.expires_at <= :now {shard}
"""

# Before every (timestamp, id) key: where a keyset walk (expiry, storage cleanup) starts.
KEYSET_START = (datetime(1, 1, 1, tzinfo=UTC), 0)


def expire_chunk(
    conn: sa.Connection,
    *,
    batch: int,
    shard: Shard,
    now: datetime,
    run_id: uuid.UUID,
    after: tuple[datetime, int] = KEYSET_START,
) -> ExpireChunk:
    due = _DUE_GRANTS.format(shard=shard_predicate("g.user_id", shard))
    picked = conn.execute(
        sa.text(_EXPIRE_PICK.format(due=due)),
        {
            "batch": batch,
            "now": now,
            "after_expires_at": after[0],
            "after_grant_id": after[1],
            **shard_params(shard),
        },
    ).one()
    if not picked.grant_ids:
        return ExpireChunk(grants=0, credits=0, users=0)
    row = conn.execute(
        sa.text(_EXPIRE_APPLY),
        {"grant_ids": list(picked.grant_ids), "amounts": list(picked.amounts), "now": now, "run_id": run_id},
    ).one()
    return ExpireChunk(
        grants=row.grants,
        credits=int(row.credits),
        users=row.users,
        last_expires_at=picked.last_expires_at,
        last_grant_id=picked.last_grant_id,
    )


def first_due_grant_after(
    conn: sa.Connection, *, shard: Shard, now: datetime, after: tuple[datetime, int]
) -> tuple[tuple[datetime, int], int, str] | None:
    """((expires_at, grant_id), grant id, user id) of the grant an expire chunk of size 1 after `after` covers —
    picked as the chunk picks it (SKIP LOCKED), to name the grant a failing chunk isolated."""
    due = _DUE_GRANTS.format(shard=shard_predicate("g.user_id", shard))
    row = conn.execute(
        sa.text(
            f"SELECT g.grant_id, g.user_id, g.expires_at FROM credit_grants g {due} LIMIT 1 FOR UPDATE SKIP LOCKED"
        ),
        {"now": now, "after_expires_at": after[0], "after_grant_id": after[1], **shard_params(shard)},
    ).one_or_none()
    if row is None:
        return None
    return (row.expires_at, int(row.grant_id)), int(row.grant_id), str(row.user_id)


def expire_preview(conn: sa.Connection, *, shard: Shard, now: datetime) -> ExpireChunk:
    sql = _EXPIRE_PREVIEW.format(shard=shard_predicate("g.user_id", shard))
    row = conn.execute(sa.text(sql), {"now": now, **shard_params(shard)}).one()
    return ExpireChunk(grants=row.grants, credits=int(row.credits), users=row.users)
