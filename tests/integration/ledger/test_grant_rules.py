"""Distribution rules against a real PostgreSQL: one periodic grant per (user, grant family, period) however often a
period runs and whatever the plan did in between, and late grants that are usable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from credit_jobs.adapters import schema_migrations
from credit_jobs.domain.grant_rules import grant_expiry
from credit_jobs.usecases.check_invariants import check_invariants
from tests.support.ledger import NOW, add_policy, add_users, rows, scalar
from tests.support.runs import RunUsecase


def _plans(engine: sa.Engine) -> None:
    add_policy(engine, "free", "free_tier", 100, 30)
    add_policy(engine, "pro", "subscription", 1000, 30)


def _move_to_pro(engine: sa.Engine, user_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE credit_eligibility SET plan_code = 'pro' WHERE user_id = :u"), {"u": str(user_id)})


def test_a_user_who_moves_free_to_pro_mid_period_keeps_one_grant_on_rerun(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    _plans(engine)
    add_users(engine, [(1, "free", "active", False, False), (2, "pro", "active", False, False)])
    first = run_usecase("distribute-credits", pinned_key="2026-11")
    assert first.status == "succeeded"
    _move_to_pro(engine, 1)
    again = run_usecase("distribute-credits", pinned_key="2026-11", trigger="manual")
    assert again.status == "succeeded"
    assert again.stats is not None
    assert again.stats.details["granted"] == 0
    assert again.stats.details["already_granted"] == 2
    assert rows(engine, "SELECT grant_type, amount FROM credit_grants WHERE user_id = '1'") == [("free_tier", 100)]
    assert scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = '1'") == 100
    assert check_invariants(engine).ok
    # a dry rerun agrees: nothing would be granted
    dry = run_usecase("distribute-credits", pinned_key="2026-11", dry_run=True)
    assert dry.stats is not None
    assert dry.stats.details["would_grant"] == 0


def test_periodic_grants_carry_the_runs_grant_family_and_another_family_grants_independently(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    _plans(engine)
    add_users(engine, [(1, "free", "active", False, False)])
    run_usecase("distribute-credits", pinned_key="2026-11")
    run_usecase("distribute-credits", job="promo", pinned_key="2026-11", grant_family="promo")
    run_usecase("distribute-credits", job="promo", pinned_key="2026-11", grant_family="promo")
    assert rows(engine, "SELECT grant_family, amount FROM credit_grants ORDER BY grant_id") == [
        ("plan", 100),
        ("promo", 100),
    ]
    assert check_invariants(engine).ok


def test_the_database_refuses_a_second_periodic_grant_in_one_family_and_period(engine: sa.Engine) -> None:
    insert = (
        "INSERT INTO credit_grants (user_id, grant_type, grant_family, period_key, amount, remaining, cause_run_id) "
        "VALUES (1, :t, 'plan', '2026-11', 5, 5, gen_random_uuid())"
    )
    with engine.begin() as conn:
        conn.execute(sa.text(insert), {"t": "free_tier"})
    with pytest.raises(sa.exc.IntegrityError, match="credit_grants_once_per_period"), engine.begin() as conn:
        conn.execute(sa.text(insert), {"t": "subscription"})
    with pytest.raises(sa.exc.IntegrityError, match="credit_grants_periodic_has_family"), engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO credit_grants (user_id, grant_type, period_key, amount, remaining, cause_run_id) "
                "VALUES (2, 'free_tier', '2026-11', 5, 5, gen_random_uuid())"
            )
        )


def test_migration_0006_keeps_existing_cross_type_duplicates_marks_them_and_check_reports_them(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    # A database as it was before 0006: drop to 0005 (the schema's own downgrade), write the ledger an old rerun left.
    from alembic import command

    config = schema_migrations.alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0005")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO credit_grants (user_id, grant_type, period_key, amount, remaining, cause_run_id) VALUES "
                "(1, 'free_tier', '2026-10', 100, 100, gen_random_uuid()),"
                "(1, 'subscription', '2026-10', 1000, 1000, gen_random_uuid()),"
                "(2, 'free_tier', '2026-10', 100, 100, gen_random_uuid()),"
                "(3, 'gift', NULL, 7, 7, gen_random_uuid())"
            )
        )
        conn.execute(sa.text("INSERT INTO credit_accounts (user_id, balance) VALUES (1, 1100), (2, 100), (3, 7)"))
    assert schema_migrations.upgrade_schema(engine) == schema_migrations.head_revision()
    assert rows(
        engine, "SELECT user_id, grant_type, grant_family, legacy_duplicate FROM credit_grants ORDER BY grant_id"
    ) == [
        ("1", "free_tier", "plan", False),
        ("1", "subscription", "plan", True),
        ("2", "free_tier", "plan", False),
        ("3", "gift", None, False),
    ]
    report = check_invariants(engine)
    (dup,) = report.violations["one_periodic_grant_per_family_period"]
    assert (dup["user_id"], dup["period_key"], dup["grant_family"], dup["grants"]) == ("1", "2026-10", "plan", 2)
    # the kept grant still blocks a third one: a rerun of 2026-10 grants user 1 nothing
    add_policy(engine, "pro", "subscription", 1000, 30)
    add_users(engine, [(1, "pro", "active", False, False)])
    outcome = run_usecase("distribute-credits", pinned_key="2026-10")
    assert outcome.stats is not None
    assert outcome.stats.details["granted"] == 0
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE user_id = '1'") == 2


def _spendable(engine: sa.Engine, at: datetime) -> dict[int, int]:
    return dict(
        rows(
            engine,
            "SELECT user_id, coalesce(sum(remaining) FILTER (WHERE expires_at IS NULL OR expires_at > :at), 0) "
            "FROM credit_grants GROUP BY user_id",
            at=at,
        )
    )


def test_a_backfill_of_an_old_period_grants_usable_credits_the_same_on_every_rerun(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    _plans(engine)
    add_users(engine, [(1, "free", "active", False, False), (2, "free", "active", False, False)])
    late = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    outcome = run_usecase("distribute-credits", now=late, pinned_key="2026-10", trigger="backfill")
    assert outcome.status == "succeeded"
    # 2026-10-01 + 30 days = 2026-10-31, already past on 2026-11-28: the validity counts from the grant time instead
    assert rows(engine, "SELECT DISTINCT expires_at FROM credit_grants") == [(late + timedelta(days=30),)]
    assert grant_expiry(datetime(2026, 10, 1, tzinfo=UTC), late, 30) == late + timedelta(days=30)  # the stated rule
    balances = dict(rows(engine, "SELECT user_id, balance FROM credit_accounts"))
    assert _spendable(engine, late) == balances == {"1": 100, "2": 100}
    # expire-credits at the same moment takes nothing
    expired = run_usecase("expire-credits", now=late)
    assert expired.stats is not None
    assert expired.stats.processed == 0
    # a rerun the next day changes no existing grant; a user eligible since gets their own usable validity
    add_users(engine, [(3, "free", "active", False, False)])
    later = late + timedelta(days=1)
    run_usecase("distribute-credits", now=later, pinned_key="2026-10", trigger="backfill")
    assert dict(rows(engine, "SELECT user_id, expires_at FROM credit_grants")) == {
        "1": late + timedelta(days=30),
        "2": late + timedelta(days=30),
        "3": later + timedelta(days=30),
    }
    assert check_invariants(engine).ok


def test_an_on_time_grant_stays_anchored_to_the_period_start(engine: sa.Engine, run_usecase: RunUsecase) -> None:
    _plans(engine)
    add_users(engine, [(1, "free", "active", False, False)])
    run_usecase("distribute-credits", now=NOW, pinned_key="2026-11")
    assert scalar(engine, "SELECT expires_at FROM credit_grants") == datetime(2026, 12, 1, tzinfo=UTC)
    assert grant_expiry(datetime(2026, 11, 1, tzinfo=UTC), NOW, 30) == datetime(2026, 12, 1, tzinfo=UTC)


def test_a_servers_time_zone_does_not_move_an_expiry_across_a_dst_change(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    # A PostgreSQL whose TimeZone is New York's (initdb takes the host's zone): November's 30 days cross the
    # fall-back change there (2026-11-01 06:00Z). Calendar days in that zone would end an hour late.
    name = scalar(engine, "SELECT current_database()")
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER DATABASE \"{name}\" SET timezone = 'America/New_York'"))
    engine.dispose()
    _plans(engine)
    add_users(engine, [(1, "free", "active", False, False)])
    assert scalar(engine, "SHOW timezone") == "America/New_York"
    run_usecase("distribute-credits", now=NOW, pinned_key="2026-11")
    assert scalar(engine, "SELECT expires_at FROM credit_grants") == datetime(2026, 12, 1, tzinfo=UTC)
