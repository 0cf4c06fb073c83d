"""Helpers for integration tests: seed policies and users, read single values and rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from credit_jobs.adapters.db_clock import database_now
from credit_jobs.domain.period_keys import Period, format_key

# The shared instant (tests/support/instants.py), re-exported for the tests that import it from here.
from tests.support.instants import NOW as NOW

# Users the data makes eligible for a grant (active or lifetime, not banned, plan with a policy) — the tests' own
# statement of the rule, independent of the SQL under test.
ELIGIBLE_SQL = """
SELECT count(*) FROM credit_eligibility e JOIN plan_credit_policies p ON p.plan_code = e.plan_code AND p.active
WHERE (e.status = 'active' OR e.is_lifetime) AND NOT e.is_banned
"""


def add_policy(engine: sa.Engine, plan: str, grant_type: str, credits: int, expiry_days: int | None) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO plan_credit_policies (plan_code, grant_type, credits_per_period, expiry_days) "
                "VALUES (:p, :t, :c, :d)"
            ),
            {"p": plan, "t": grant_type, "c": credits, "d": expiry_days},
        )


def add_users(engine: sa.Engine, rows: list[tuple[int | str, str, str, bool, bool]]) -> None:
    """rows: (user_id, plan_code, status, is_lifetime, is_banned); a numbered user 7 is the text id '7'."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO credit_eligibility (user_id, plan_code, status, is_lifetime, is_banned) "
                "VALUES (:u, :p, :s, :l, :b)"
            ),
            [{"u": str(u), "p": p, "s": s, "l": lt, "b": b} for u, p, s, lt, b in rows],
        )


def live_month(engine: sa.Engine) -> str:
    """A month key (UTC) whose grant of a 30-day policy, distributed now, is live by the database's clock — the
    clock consume, balance and the CLI read — for at least a day, whatever the date: the month of the database's now
    plus two days. (A month's grant expires 30 days after the month starts, so on the 31st the current month's has
    already expired; two days ahead is always a month whose grant lives between one and 32 more days.)

    For tests that reach code reading the database's clock (a `credit-jobs` process, the API, `consume` without
    `now=`): never the pinned `NOW`, which mixes two clocks and breaks the day the real date passes it."""
    return format_key(database_now(engine).astimezone(UTC) + timedelta(days=2), Period.MONTHLY)


def scalar(engine: sa.Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def rows(engine: sa.Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params).all())


def fill_balance_to(engine: sa.Engine, user_id: int | str, balance: int) -> list[int]:
    """One-off gifts (each within MAX_CREDITS) totalling `balance`, and the account to match: the ledger stays sound,
    so a later grant that would pass MAX_BALANCE is refused by the database for this user alone (a poisoned user)."""
    from credit_jobs.domain.limits import MAX_CREDITS

    user_id = str(user_id)
    full, rest = divmod(balance, MAX_CREDITS)
    amounts = [MAX_CREDITS] * full + ([rest] if rest else [])
    with engine.begin() as conn:
        ids = [
            row.grant_id
            for row in conn.execute(
                sa.text(
                    "INSERT INTO credit_grants (user_id, grant_type, amount, remaining, granted_at, "
                    "cause_request_id, idempotency_key) "
                    "SELECT :u, 'gift', a, a, :t, 'seed-' || :u || '-' || n, 'seed-' || :u || '-' || n "
                    "FROM unnest(CAST(:amounts AS bigint[])) WITH ORDINALITY AS x(a, n) RETURNING grant_id"
                ),
                {"u": user_id, "amounts": amounts, "t": NOW - timedelta(days=40)},
            )
        ]
        conn.execute(
            sa.text("INSERT INTO credit_accounts (user_id, balance) VALUES (:u, :b)"), {"u": user_id, "b": balance}
        )
    return ids


def add_gift(
    engine: sa.Engine,
    user_id: int | str,
    amount: int,
    key: str,
    expires_in_days: int | None = None,
    *,
    granted_at: datetime = NOW,
) -> int:
    """A one-off gift through the library's `grant` (the user need not be eligible): its grant id."""
    from credit_jobs.usecases.grant import grant

    return grant(
        engine,
        str(user_id),
        amount,
        grant_type="gift",
        allow_unknown_user=True,
        idempotency_key=key,
        expires_in_days=expires_in_days,
        now=granted_at,
    ).grant_id
