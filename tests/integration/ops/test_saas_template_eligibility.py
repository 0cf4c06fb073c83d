"""examples/saas-template/eligibility.sql over the SaaS template's real tables, in a real database.

The template's `user`, `payment` and `user_lifetime_membership` tables are created as the template defines them (text
ids, timestamps without time zone, nullable `banned`), filled with one user per rule, the view installed from the
file, checked row by row, then put in place of `credit_eligibility` and driven by a real distribute-credits run.
"""

from __future__ import annotations

import sqlalchemy as sa

from credit_jobs.usecases.check_invariants import check_invariants
from tests.integration.conftest import RunUsecase
from tests.support.ledger import add_policy, rows
from tests.support.saas_template import ELIGIBILITY_SQL, create_template_tables

USERS = [
    # id, banned, ban_expires (SQL)
    ("u_free", None, "NULL"),
    ("u_pro", False, "NULL"),
    ("u_trial", None, "NULL"),
    ("u_canceled", None, "NULL"),
    ("u_resubscribed", None, "NULL"),
    ("u_life", None, "NULL"),
    ("u_life_revoked", None, "NULL"),
    ("u_banned", True, "NULL"),
    ("u_ban_over", True, "now() - interval '1 day'"),
    ("u_ban_later", True, "now() + interval '1 day'"),
    ("u_unmapped", None, "NULL"),
]

PAYMENTS = [
    # id, price, user, status, created (days ago)
    ("p1", "price_pro_month", "u_pro", "active", 10),
    ("p2", "price_pro_year", "u_trial", "trialing", 3),
    ("p3", "price_pro_month", "u_canceled", "canceled", 5),
    ("p4", "price_pro_month", "u_resubscribed", "canceled", 40),
    ("p5", "price_pro_year", "u_resubscribed", "active", 2),
    ("p6", "price_secret", "u_unmapped", "active", 1),
    ("p7", "price_pro_month", "u_banned", "active", 1),
]

EXPECTED = {
    "u_free": ("free", "active", False, False),
    "u_pro": ("pro", "active", False, False),
    "u_trial": ("pro", "active", False, False),
    "u_canceled": ("free", "active", False, False),
    "u_resubscribed": ("pro", "active", False, False),
    "u_life": ("lifetime", "lifetime", True, False),
    "u_life_revoked": ("free", "active", False, False),
    "u_banned": ("pro", "active", False, True),
    "u_ban_over": ("free", "active", False, False),
    "u_ban_later": ("free", "active", False, True),
    "u_unmapped": ("unmapped:price_secret", "active", False, False),
}


def _template_database(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        create_template_tables(conn)
        for user_id, banned, ban_expires in USERS:
            conn.execute(
                sa.text(f'INSERT INTO "user" (id, email, banned, ban_expires) VALUES (:id, :email, :b, {ban_expires})'),
                {"id": user_id, "email": f"{user_id}@example.com", "b": banned},
            )
        for pid, price, user_id, status, days in PAYMENTS:
            conn.execute(
                sa.text(
                    "INSERT INTO payment (id, price_id, type, user_id, customer_id, status, created_at) "
                    "VALUES (:id, :price, 'subscription', :u, 'cus', :s, now() - make_interval(days => :d))"
                ),
                {"id": pid, "price": price, "u": user_id, "s": status, "d": days},
            )
        conn.execute(
            sa.text(
                "INSERT INTO user_lifetime_membership (id, user_id, price_id, cycle_ref_date, revoked_at) VALUES "
                "('m1', 'u_life', 'price_lifetime', now(), NULL), "
                "('m2', 'u_life_revoked', 'price_lifetime', now(), now() - interval '3 days')"
            )
        )
        conn.exec_driver_sql(ELIGIBILITY_SQL.read_text())
        conn.execute(
            sa.text(
                "INSERT INTO credit_plan_prices (price_id, plan_code) VALUES "
                "('price_pro_month', 'pro'), ('price_pro_year', 'pro'), ('price_lifetime', 'lifetime')"
            )
        )


def test_the_view_maps_every_template_user_by_the_documented_rules(engine: sa.Engine) -> None:
    _template_database(engine)
    found = {
        r.user_id: (r.plan_code, r.status, r.is_lifetime, r.is_banned)
        for r in rows(engine, "SELECT * FROM saas_credit_eligibility")
    }
    assert found == EXPECTED


def test_distribute_credits_runs_over_the_view_in_place_of_the_table(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    _template_database(engine)
    add_policy(engine, "free", "free_tier", 50, 30)
    add_policy(engine, "pro", "subscription", 1000, 30)
    add_policy(engine, "lifetime", "lifetime_monthly", 1000, 30)
    with engine.begin() as conn:  # docs/adopting-eligibility.md: the swap, in one transaction
        conn.execute(sa.text("ALTER TABLE credit_eligibility RENAME TO credit_eligibility_unused"))
        conn.execute(sa.text("CREATE VIEW credit_eligibility AS SELECT * FROM saas_credit_eligibility"))
    outcome = run_usecase("distribute-credits", pinned_key="2026-11")
    assert outcome.stats is not None
    details = outcome.stats.details
    assert (details["granted"], details["banned"], details["unconfigured_plan_users"]) == (8, 2, 1)
    assert details["unconfigured_plans"] == ["unmapped:price_secret"]
    granted = dict(rows(engine, "SELECT user_id, amount FROM credit_grants"))
    assert granted == {
        "u_free": 50,
        "u_pro": 1000,
        "u_trial": 1000,
        "u_canceled": 50,
        "u_resubscribed": 1000,
        "u_life": 1000,
        "u_life_revoked": 50,
        "u_ban_over": 50,
    }
    again = run_usecase("distribute-credits", pinned_key="2026-11")
    assert again.stats is not None
    assert again.stats.details["granted"] == 0
    assert check_invariants(engine).ok
