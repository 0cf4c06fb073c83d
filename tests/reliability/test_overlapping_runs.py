"""Overlapping runs never deadlock: real `credit-jobs` processes under different CreditJob names (different guards,
so they really write at once) expiring and distributing for the same users, with small chunks that interleave.

Every statement that writes many balances takes its row locks in user-id order, so these runs wait for each other
instead of deadlocking; a deadlock or serialization failure that still happens is retried for its chunk.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from credit_jobs.adapters import database
from credit_jobs.usecases.check_invariants import check_invariants
from tests.support import cli_process
from tests.support.ledger import add_policy, scalar

pytestmark = pytest.mark.slow

USERS = 3000
GRANTS_PER_USER = 8


@pytest.fixture
def engine(database_url: str) -> Any:
    eng = database.create_engine(database_url)
    yield eng
    eng.dispose()


def _seed_due_grants(engine: sa.Engine, round_no: int) -> None:
    """USERS x GRANTS_PER_USER due gifts in a random expiry order, so every chunk of every run spans many users and
    each user's grants fall into chunks of different runs; balances to match (the ledger stays sound)."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                """
                INSERT INTO credit_grants (user_id, grant_type, amount, remaining, granted_at, expires_at,
                                           cause_request_id, idempotency_key)
                SELECT u, 'gift', 10, 10, now() - interval '30 days',
                       now() - interval '1 day' - random() * interval '1 day',
                       'seed-' || :r || '-' || u || '-' || k, 'seed-' || :r || '-' || u || '-' || k
                FROM generate_series(1, :users) u, generate_series(1, :per_user) k
                """
            ),
            {"users": USERS, "per_user": GRANTS_PER_USER, "r": round_no},
        )
        conn.execute(
            sa.text(
                """
                INSERT INTO credit_accounts AS a (user_id, balance)
                SELECT u, :add FROM generate_series(1, :users) u
                ON CONFLICT (user_id) DO UPDATE SET balance = a.balance + EXCLUDED.balance
                """
            ),
            {"users": USERS, "add": 10 * GRANTS_PER_USER},
        )


def _start(database_url: str, usecase: str, name: str, *extra: str) -> Any:
    env = cli_process.cli_env(database_url, CREDITJOB_NAME=name)
    return cli_process.start(["run", usecase, "--batch-size", "97", *extra], env)


def _retries(results: list[tuple[str, int]]) -> int:
    return sum(1 for err, _ in results for line in cli_process.log_lines(err) if line["event"] == "chunk.retried")


def test_three_concurrent_expiry_runs_never_deadlock_and_expire_every_grant_once(
    database_url: str, engine: sa.Engine
) -> None:
    failures = []
    retries = 0
    for round_no in range(3):
        _seed_due_grants(engine, round_no)
        procs = [_start(database_url, "expire-credits", f"expire-{n}") for n in range(3)]
        results = [(p.communicate(timeout=600)[1], p.returncode) for p in procs]
        failures += [err for err, code in results if code != 0]
        retries += _retries(results)
    assert failures == []
    # The lock order alone prevents the deadlocks: the per-chunk retry (the safety net) was never needed.
    assert retries == 0
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE expired_at IS NULL") == 0
    total = 3 * USERS * GRANTS_PER_USER
    assert scalar(engine, "SELECT count(*) FROM credit_entries WHERE kind = 'expiry'") == total
    assert scalar(engine, "SELECT count(DISTINCT grant_id) FROM credit_entries WHERE kind = 'expiry'") == total
    assert scalar(engine, "SELECT coalesce(sum((stats->>'expired_grants')::int), 0) FROM job_runs") == total
    assert scalar(engine, "SELECT sum(balance) FROM credit_accounts") == 0
    report = check_invariants(engine)
    assert report.ok, report.violations


def test_expiry_beside_distribution_never_deadlocks(database_url: str, engine: sa.Engine) -> None:
    add_policy(engine, "free", "free_tier", 100, None)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO credit_eligibility (user_id, plan_code, status) "
                "SELECT u, 'free', 'active' FROM generate_series(1, :n) u"
            ),
            {"n": USERS},
        )
    failures = []
    retries = 0
    for round_no, period in enumerate(("2026-09", "2026-10", "2026-11")):
        _seed_due_grants(engine, round_no)
        procs = [
            _start(database_url, "expire-credits", "expire-a"),
            _start(database_url, "distribute-credits", "monthly-a", "--period-key", period),
            _start(database_url, "expire-credits", "expire-b"),
            _start(database_url, "distribute-credits", "monthly-b", "--period-key", period),
        ]
        results = [(p.communicate(timeout=600)[1], p.returncode) for p in procs]
        failures += [err for err, code in results if code != 0]
        retries += _retries(results)
    assert failures == []
    assert retries == 0
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE period_key IS NOT NULL") == 3 * USERS
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE grant_type = 'gift' AND expired_at IS NULL") == 0
    assert scalar(engine, "SELECT sum(balance) FROM credit_accounts") == 3 * USERS * 100
    report = check_invariants(engine)
    assert report.ok, report.violations
