"""expire-credits against a real PostgreSQL: each expired grant emptied once, partly used grants, dry runs, many
chunks of one expiry."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from credit_jobs.usecases.check_invariants import check_invariants
from tests.support.ledger import NOW, add_gift, rows, scalar
from tests.support.runs import RunUsecase

TEN_DAYS_AGO = NOW - timedelta(days=10)  # the gifts' grant time


def test_expiry_empties_each_expired_grant_once_and_reduces_the_balance(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    old = add_gift(engine, 1, 50, "a", expires_in_days=5, granted_at=TEN_DAYS_AGO)  # expired 5 days before NOW
    live = add_gift(engine, 1, 70, "b", expires_in_days=30, granted_at=TEN_DAYS_AGO)
    forever = add_gift(engine, 2, 20, "c", expires_in_days=None, granted_at=TEN_DAYS_AGO)
    outcome = run_usecase("expire-credits")
    assert outcome.status == "succeeded"
    assert outcome.stats is not None
    assert outcome.stats.credits == {"expired": 50}
    remaining = dict(rows(engine, "SELECT grant_id, remaining FROM credit_grants"))
    assert remaining == {old: 0, live: 70, forever: 20}
    assert dict(rows(engine, "SELECT user_id, balance FROM credit_accounts")) == {"1": 70, "2": 20}
    entries = rows(engine, "SELECT grant_id, kind, amount, cause_run_id FROM credit_entries")
    assert [tuple(e) for e in entries] == [(old, "expiry", 50, outcome.run_id)]
    again = run_usecase("expire-credits", pinned_key="2026-11-29")
    assert again.stats is not None
    assert again.stats.credits == {"expired": 0}
    assert check_invariants(engine).ok


def test_expiry_takes_only_what_is_left_of_a_partly_used_grant(engine: sa.Engine, run_usecase: RunUsecase) -> None:
    add_gift(engine, 1, 50, "a", expires_in_days=5, granted_at=TEN_DAYS_AGO)
    with engine.begin() as conn:  # used before it expired
        conn.execute(sa.text("UPDATE credit_grants SET remaining = 30"))
        conn.execute(sa.text("UPDATE credit_accounts SET balance = 30"))
        conn.execute(
            sa.text(
                "INSERT INTO credit_entries (user_id, grant_id, kind, amount, cause_request_id) "
                "SELECT user_id, grant_id, 'usage', 20, 'use-1' FROM credit_grants"
            )
        )
    outcome = run_usecase("expire-credits")
    assert outcome.stats is not None
    assert outcome.stats.credits == {"expired": 30}
    assert scalar(engine, "SELECT balance FROM credit_accounts") == 0
    assert check_invariants(engine).ok


def test_a_dry_run_of_expiry_counts_and_changes_nothing(engine: sa.Engine, run_usecase: RunUsecase) -> None:
    add_gift(engine, 1, 50, "a", expires_in_days=5, granted_at=TEN_DAYS_AGO)
    outcome = run_usecase("expire-credits", dry_run=True)
    assert outcome.stats is not None
    assert outcome.stats.details["would_expire_grants"] == 1
    assert scalar(engine, "SELECT remaining FROM credit_grants") == 50
    assert scalar(engine, "SELECT count(*) FROM credit_entries") == 0


def test_expiry_walks_many_chunks_of_grants_with_the_same_expiry_exactly_once(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    for n in range(10):  # identical expires_at: the keyset must break ties by grant id
        add_gift(engine, n % 3 + 1, 10 + n, f"k{n}", expires_in_days=5, granted_at=TEN_DAYS_AGO)
    outcome = run_usecase("expire-credits", batch_size=3)
    assert outcome.stats is not None
    assert outcome.stats.details == {"expired_grants": 10, "chunks": 4}
    assert outcome.stats.credits == {"expired": sum(10 + n for n in range(10))}
    assert scalar(engine, "SELECT count(*) FROM credit_entries WHERE kind = 'expiry'") == 10
    assert check_invariants(engine).ok
