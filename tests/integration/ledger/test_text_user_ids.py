"""Text user ids (migration 0007): an existing BIGINT ledger converts in place, text ids work end to end, and shards
partition any ids exactly with the stable `credit_shard_hash` (the same function as `domain.sharding.shard_hash`)."""

from __future__ import annotations

import secrets

import pytest
import sqlalchemy as sa
from alembic import command

from credit_jobs.adapters import schema_migrations
from credit_jobs.domain.errors import ConfigError
from credit_jobs.domain.sharding import Shard, shard_hash
from credit_jobs.usecases.check_invariants import check_invariants
from credit_jobs.usecases.consume import consume
from credit_jobs.usecases.grant import grant
from tests.integration.conftest import RunUsecase
from tests.support.ledger import NOW, add_policy, rows, scalar

USER_ID_TABLES = (
    "credit_eligibility",
    "credit_accounts",
    "credit_grants",
    "credit_entries",
    "credit_requests",
    "stored_files",
)


def _downgrade_to_0006(engine: sa.Engine) -> None:
    config = schema_migrations.alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0006")


def _bigint_era_ledger(engine: sa.Engine) -> None:
    """What a 0006 database holds: numeric ids everywhere, claims whose JSON carries numeric user ids."""
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO credit_eligibility (user_id, plan_code, status) VALUES (42, 'pro', 'active')")
        )
        conn.execute(
            sa.text(
                "INSERT INTO credit_grants (user_id, grant_type, amount, remaining, expires_at, cause_request_id, "
                "idempotency_key) VALUES (42, 'gift', 100, 90, now() + interval '9 days', 'K1', 'K1')"
            )
        )
        conn.execute(sa.text("INSERT INTO credit_accounts (user_id, balance) VALUES (42, 90)"))
        conn.execute(
            sa.text(
                "INSERT INTO credit_entries (user_id, grant_id, kind, amount, cause_request_id) "
                "SELECT 42, grant_id, 'usage', 10, 'R1' FROM credit_grants"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO credit_requests (request_id, operation, user_id, params, result) VALUES "
                """('K1', 'grant', 42, '{"user_id": 42, "amount": 100, "grant_type": "gift", """
                """"expires_in_days": null}', '{"grant_id": 1}'),"""
                """('R1', 'consume', 42, '{"user_id": 42, "amount": 10}', '{"takes": [[1, 10]]}')"""
            )
        )
        conn.execute(sa.text("INSERT INTO stored_files (user_id, uri) VALUES (42, 'file:///tmp/x'), (NULL, 'u2')"))


def test_migration_0007_converts_a_bigint_ledger_in_place_and_old_requests_still_replay(engine: sa.Engine) -> None:
    _downgrade_to_0006(engine)
    _bigint_era_ledger(engine)
    assert schema_migrations.upgrade_schema(engine) == schema_migrations.head_revision()

    for table in USER_ID_TABLES:
        assert (
            scalar(
                engine,
                "SELECT format_type(atttypid, atttypmod) || ' ' || coalesce(c.collname, '') FROM pg_attribute a "
                "LEFT JOIN pg_collation c ON c.oid = a.attcollation "
                "WHERE attrelid = CAST(:t AS regclass) AND attname = 'user_id'",
                t=table,
            )
            == "text C"
        ), table
        assert scalar(engine, f"SELECT count(*) FROM {table} WHERE user_id = '42'") >= 1, table
    assert rows(engine, "SELECT request_id, params->'user_id' FROM credit_requests ORDER BY 1") == [
        ("K1", "42"),
        ("R1", "42"),
    ]
    # the retries of requests made before the upgrade replay (the id now text), nothing applied twice
    replayed = consume(engine, "42", 10, request_id="R1")
    assert (replayed.replayed, replayed.takes) == (True, [(1, 10)])
    assert grant(engine, "42", 100, grant_type="gift", allow_unknown_user=True, idempotency_key="K1").created is False
    assert scalar(engine, "SELECT balance FROM credit_accounts WHERE user_id = '42'") == 90
    # the indexes came back (rebuilt by the type change) and still hold the ledger's invariants
    assert scalar(engine, "SELECT count(*) FROM pg_indexes WHERE indexname = 'credit_grants_once_per_period'") == 1
    assert check_invariants(engine).ok


def test_migration_0007_downgrades_back_to_bigint_while_every_id_is_a_number(engine: sa.Engine) -> None:
    _downgrade_to_0006(engine)
    _bigint_era_ledger(engine)
    schema_migrations.upgrade_schema(engine)
    _downgrade_to_0006(engine)
    assert rows(engine, "SELECT user_id, params->'user_id' FROM credit_requests ORDER BY 1") == [(42, 42), (42, 42)]
    assert schema_migrations.upgrade_schema(engine) == schema_migrations.head_revision()


def test_the_database_refuses_an_account_whose_user_id_breaks_the_text_rules(engine: sa.Engine) -> None:
    for bad in ("", " 42", "42 ", "a\tb", "x" * 256):
        with pytest.raises(sa.exc.IntegrityError, match="credit_accounts_user_id_text"), engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO credit_accounts (user_id) VALUES (:u)"), {"u": bad})


def test_sql_shard_hash_equals_python_and_four_shards_partition_10k_ids_exactly(engine: sa.Engine) -> None:
    ids = (
        [secrets.token_hex(16) for _ in range(9_990)]
        + ["42", "0", "-1", "Zoë", "🙂", "a b", "x" * 255]
        + [f"user_{n}" for n in range(3)]
    )
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TEMP TABLE ids (user_id text)"))
        conn.execute(sa.text("INSERT INTO ids SELECT unnest(CAST(:ids AS text[]))"), {"ids": ids})
        hashed = dict(conn.execute(sa.text("SELECT user_id, credit_shard_hash(user_id) FROM ids")).all())
        per_shard = [
            set(
                conn.execute(
                    sa.text("SELECT user_id FROM ids WHERE credit_shard_hash(user_id) % 4 = :i"), {"i": i}
                ).scalars()
            )
            for i in range(4)
        ]
    assert hashed == {u: shard_hash(u) for u in ids}
    assert sum(len(s) for s in per_shard) == len(ids) == 10_000
    assert set().union(*per_shard) == set(ids)
    assert all(len(s) > 2_000 for s in per_shard)  # spread, not all in one shard
    assert all(Shard(i, 4).owns(u) for i, shard in enumerate(per_shard) for u in shard)


def test_four_sharded_distribute_runs_grant_every_text_id_user_exactly_once(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    add_policy(engine, "pro", "subscription", 1000, 30)
    ids = [secrets.token_urlsafe(24) for _ in range(400)] + ["42", "7", "100"]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO credit_eligibility (user_id, plan_code, status) "
                "SELECT unnest(CAST(:ids AS text[])), 'pro', 'active'"
            ),
            {"ids": ids},
        )
    granted = 0
    for i in range(4):
        outcome = run_usecase("distribute-credits", shard=Shard(i, 4), batch_size=37)
        assert outcome.stats is not None
        granted += int(outcome.stats.details["granted"])
    assert granted == len(ids)
    assert scalar(engine, "SELECT count(DISTINCT user_id) FROM credit_grants") == len(ids)
    # a BIGINT-looking id is just text (consumed at the runs' pinned instant, the clock their grants were written at)
    assert consume(engine, "42", 5, now=NOW).takes[0][1] == 5
    assert check_invariants(engine).ok


def test_an_int_user_id_from_a_pre_0007_library_caller_is_refused_before_any_write(engine: sa.Engine) -> None:
    with pytest.raises(ConfigError, match="the user id must be text, got int 42"):
        consume(engine, 42, 5)  # type: ignore[arg-type]
    assert scalar(engine, "SELECT count(*) FROM credit_requests") == 0
