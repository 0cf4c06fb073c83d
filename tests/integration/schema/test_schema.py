"""The Alembic migrations create exactly the schema the models describe, and the constraints hold the invariants."""

from __future__ import annotations

import warnings

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.exc import IntegrityError, SAWarning

from credit_jobs.adapters import schema_migrations
from credit_jobs.adapters.tables import Base


def test_migrated_database_matches_the_models(engine: sa.Engine) -> None:
    # The bounds are NOT VALID constraints (migration 0004); SQLAlchemy reflects that as a dialect option it then
    # warns it cannot validate — a reflection quirk, not a schema difference.
    with engine.connect() as conn, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Can't validate argument 'dialect_options'", SAWarning)
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_the_database_is_at_the_head_revision_and_upgrading_again_is_a_no_op(engine: sa.Engine) -> None:
    head = schema_migrations.head_revision()
    assert schema_migrations.current_revision(engine) == head
    assert schema_migrations.upgrade_schema(engine) == head


FULL_WIDTH_NOVEMBER = "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in "2026-11")


@pytest.mark.parametrize("key", [FULL_WIDTH_NOVEMBER, "2026-1", "2026-11 ", "2026-w48", "2026-13", "loop", ""])
def test_the_database_refuses_a_non_canonical_period_key_written_by_raw_sql(engine: sa.Engine, key: str) -> None:
    grant = (
        "INSERT INTO credit_grants (user_id, grant_type, period_key, amount, remaining, cause_request_id) "
        "VALUES (1, 'subscription', :key, 5, 5, 'r')"
    )
    run = (
        "INSERT INTO job_runs (run_id, job, usecase, period_key, trigger, status, started_at) "
        "VALUES (gen_random_uuid(), 'j', 'distribute-credits', :key, 'cli', 'succeeded', now())"
    )
    for statement, constraint in (
        (grant, "credit_grants_period_key_canonical"),
        (run, "job_runs_period_key_canonical"),
    ):
        with pytest.raises(IntegrityError, match=constraint), engine.begin() as conn:
            conn.execute(sa.text(statement), {"key": key})


@pytest.mark.parametrize(
    "key", ["2026-11", "2026-W53", "2026-11-28", "2026-11-01T01-04:00", "2026-11-28T13+05:30", "2026-11-28T13"]
)
def test_the_database_accepts_canonical_and_legacy_hourly_keys(engine: sa.Engine, key: str) -> None:
    # The legacy hourly form (no offset) stays writable so rows from before migration 0005 remain updatable.
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO credit_grants (user_id, grant_type, grant_family, period_key, amount, remaining, "
                "cause_request_id) VALUES (1, 'subscription', 'plan', :key, 5, 5, 'r')"
            ),
            {"key": key},
        )


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        ("INSERT INTO credit_accounts (user_id, balance) VALUES (1, -1)", "credit_accounts_balance_not_negative"),
        (
            "INSERT INTO credit_grants (user_id, grant_type, amount, remaining) VALUES (1, 'gift', 5, 5)",
            "credit_grants_has_cause",
        ),
        (
            "INSERT INTO credit_grants (user_id, grant_type, amount, remaining, cause_request_id) "
            "VALUES (1, 'gift', 5, 6, 'r')",
            "credit_grants_remaining_bounds",
        ),
        (
            "INSERT INTO credit_grants (user_id, grant_type, grant_family, period_key, amount, remaining, "
            "cause_request_id) VALUES (1, 'subscription', 'plan', '2026-11', 5, 5, 'a'), "
            "(1, 'free_tier', 'plan', '2026-11', 5, 5, 'b')",
            "credit_grants_once_per_period",
        ),
        (
            "INSERT INTO credit_grants (user_id, grant_type, amount, remaining, cause_request_id) "
            "VALUES (1, 'gift', 1000000000001, 1, 'r')",
            "credit_grants_amount_bounded",
        ),
        (
            "INSERT INTO credit_accounts (user_id, balance) VALUES (1, 1000000000000001)",
            "credit_accounts_balance_bounded",
        ),
        (
            "INSERT INTO plan_credit_policies (plan_code, grant_type, credits_per_period, expiry_days) "
            "VALUES ('p', 'subscription', 100, 36501)",
            "plan_credit_policies_expiry_bounded",
        ),
    ],
)
def test_the_database_refuses_rows_that_break_an_invariant(engine: sa.Engine, statement: str, constraint: str) -> None:
    with pytest.raises(IntegrityError, match=constraint), engine.begin() as conn:
        conn.execute(sa.text(statement))


def test_a_grant_cannot_be_expired_twice(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        grant_id = conn.execute(
            sa.text(
                "INSERT INTO credit_grants (user_id, grant_type, amount, remaining, cause_request_id) "
                "VALUES (1, 'gift', 5, 5, 'r') RETURNING grant_id"
            )
        ).scalar_one()
    insert = (
        "INSERT INTO credit_entries (user_id, grant_id, kind, amount, cause_request_id) "
        "VALUES (1, :g, 'expiry', 5, 'r')"
    )
    with engine.begin() as conn:
        conn.execute(sa.text(insert), {"g": grant_id})
    with pytest.raises(IntegrityError, match="credit_entries_one_expiry"), engine.begin() as conn:
        conn.execute(sa.text(insert), {"g": grant_id})


def test_every_index_the_models_declare_exists_with_its_predicate(engine: sa.Engine) -> None:
    # compare_metadata does not compare partial-index predicates; read them from the catalog instead.
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"))
        actual: dict[str, str] = {row.indexname: row.indexdef for row in found}
    for table in Base.metadata.tables.values():
        for index in table.indexes:
            assert index.name in actual
            where = index.dialect_options["postgresql"]["where"]
            if where is not None:
                assert "WHERE" in actual[index.name], index.name
            else:
                assert "WHERE" not in actual[index.name], index.name
