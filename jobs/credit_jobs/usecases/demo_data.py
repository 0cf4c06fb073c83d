"""Deterministic sample data for the demo, the benchmarks and the tests: plans, users, grants about to expire.

Generated in SQL (`generate_series` + md5-derived pseudo-random numbers), so a million users take seconds and the
same `--seed` always yields the same data. The mix covers every path of the jobs: four configured plans, a
misconfigured one (`legacy-gold`, no policy), banned and inactive users, lifetime deals, and one-off gift grants
expiring from two days ago to two days ahead. Re-seeding is idempotent. User ids are text (migration 0007): the
decimal number of the user (`"1"`, `"2"`, …, what the CLI's `--user 42` names), or with `id_style="random32"` a
32-character hex id derived from it (md5 of number and seed: realistic application ids for the benchmark).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

POLICIES = [
    # plan, grant type, credits per period, expiry days
    ("free", "free_tier", 100, 30),
    ("pro", "subscription", 1000, 31),
    ("team", "subscription", 5000, 31),
    ("lifetime", "lifetime_monthly", 500, 60),
]
MISCONFIGURED_PLAN = "legacy-gold"
# SQL for user number i's id, by id style (the numbered ids the demo and tests name, or 32-char random-looking ids)
ID_STYLES = {"numeric": "CAST(i AS text)", "random32": "md5(i || '|' || :seed || '|user')"}


def _rand(expr: str, salt: str) -> str:
    """SQL for a deterministic pseudo-random integer 0..99 from `expr`, the seed and a salt."""
    return f"(('x' || substr(md5({expr} || '|' || :seed || '|{salt}'), 1, 8))::bit(32)::bigint % 100)"


_SEED_USERS = f"""
INSERT INTO credit_eligibility (user_id, plan_code, status, is_lifetime, is_banned)
SELECT {{user_id}},
       CASE WHEN r < 45 THEN 'free' WHEN r < 75 THEN 'pro' WHEN r < 83 THEN 'team'
            WHEN r < 93 THEN 'lifetime' WHEN r < 95 THEN '{MISCONFIGURED_PLAN}' ELSE 'pro' END,
       CASE WHEN r >= 95 THEN 'canceled' WHEN r BETWEEN 83 AND 92 THEN 'lifetime'
            WHEN s < 4 THEN 'past_due' ELSE 'active' END,
       r BETWEEN 83 AND 92,
       b < 3
FROM (SELECT i, {_rand("i", "plan")} AS r, {_rand("i", "status")} AS s, {_rand("i", "ban")} AS b
      FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS i) u
ON CONFLICT (user_id) DO NOTHING
"""

_SEED_GIFTS = f"""
WITH gifts AS (
    INSERT INTO credit_grants (user_id, grant_type, amount, remaining, granted_at, expires_at, cause_request_id,
                               idempotency_key)
    SELECT {{user_id}}, 'gift', 50, 50, CAST(:now AS timestamptz) - interval '30 days',
           CAST(:now AS timestamptz) + make_interval(hours => ({_rand("i", "expiry")}::int - 50)),
           'demo-seed', 'demo-gift-' || i || '-' || :seed
    FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS i
    WHERE i % 10 = 0
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING user_id, amount
)
INSERT INTO credit_accounts AS a (user_id, balance)
SELECT user_id, sum(amount) FROM gifts GROUP BY user_id
ON CONFLICT (user_id) DO UPDATE SET balance = a.balance + EXCLUDED.balance
"""


@dataclass(frozen=True)
class SeedResult:
    users: int
    policies: int
    misconfigured_plan: str


def seed_demo_data(
    engine: sa.Engine,
    users: int,
    *,
    seed: int = 42,
    first_user_id: int = 1,
    gifts: bool = True,
    now: datetime | None = None,
    id_style: str = "numeric",
) -> SeedResult:
    now = now or datetime.now(UTC)
    params = {"first": first_user_id, "last": first_user_id + users - 1, "seed": str(seed), "now": now}
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO plan_credit_policies (plan_code, grant_type, credits_per_period, expiry_days) "
                "VALUES (:plan, :type, :credits, :days) ON CONFLICT (plan_code) DO NOTHING"
            ),
            [{"plan": p, "type": t, "credits": c, "days": d} for p, t, c, d in POLICIES],
        )
        user_id = ID_STYLES[id_style]
        conn.execute(sa.text(_SEED_USERS.format(user_id=user_id)), params)
        if gifts:
            conn.execute(sa.text(_SEED_GIFTS.format(user_id=user_id)), params)
    return SeedResult(users=users, policies=len(POLICIES), misconfigured_plan=MISCONFIGURED_PLAN)


_SEED_HISTORY = """
WITH months AS (
    SELECT m, date_trunc('month', CAST(:now AS timestamptz) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
              - make_interval(months => m) AS start
    FROM generate_series(1, :months) m
), granted AS (
    INSERT INTO credit_grants (user_id, grant_type, grant_family, period_key, amount, remaining, granted_at,
                               expires_at, cause_run_id)
    SELECT e.user_id, p.grant_type, 'plan', to_char(m.start AT TIME ZONE 'UTC', 'YYYY-MM'), p.credits_per_period, 0,
           m.start, m.start + coalesce(p.expiry_days, 30) * interval '24 hours', CAST(:run_id AS uuid)
    FROM months m CROSS JOIN credit_eligibility e JOIN plan_credit_policies p ON p.plan_code = e.plan_code
    ORDER BY m.m DESC, e.user_id
    ON CONFLICT DO NOTHING
    RETURNING grant_id, user_id, amount, granted_at
), spent AS (
    INSERT INTO credit_requests (request_id, operation, user_id, params, result, created_at)
    SELECT 'history-' || grant_id, 'consume', user_id, jsonb_build_object('user_id', user_id, 'amount', amount),
           jsonb_build_object('takes', jsonb_build_array(jsonb_build_array(grant_id, amount))),
           granted_at + interval '1 day'
    FROM granted
), used AS (
    INSERT INTO credit_entries (user_id, grant_id, kind, amount, created_at, cause_request_id)
    SELECT user_id, grant_id, 'usage', amount, granted_at + interval '1 day', 'history-' || grant_id FROM granted
    RETURNING 1
)
SELECT count(*) FROM used
"""


def seed_history(engine: sa.Engine, months: int, *, now: datetime | None = None) -> int:
    """`months` months of past ledger before `now`'s month (UTC) for every user with a configured plan: the monthly
    grant of each, used up by one consume (its usage entry and its request id, as `credit_consume` leaves them).
    What a ledger holds after a year in production, for the benchmarks and the plan tests: rows per user that no
    per-request read may walk. The ledger stays sound (`check` passes): a used-up grant is past its expiry with
    nothing left, so expiry never touches it. Returns the number of grants written."""
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        written = conn.execute(
            sa.text(_SEED_HISTORY),
            {"months": months, "now": now, "run_id": "00000000-0000-0000-0000-00000000d0de"},
        ).scalar_one()
    return int(written)
