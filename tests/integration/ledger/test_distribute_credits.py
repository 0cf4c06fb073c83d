"""distribute-credits against a real PostgreSQL: exactly once per period, set-based, reported honestly."""

from __future__ import annotations

import math
from datetime import timedelta

import sqlalchemy as sa

from credit_jobs.domain.limits import MAX_BALANCE
from credit_jobs.domain.sharding import Shard
from tests.support.ledger import NOW, add_policy, add_users, fill_balance_to, rows, scalar
from tests.support.runs import RunUsecase


def _standard_users(engine: sa.Engine) -> None:
    add_policy(engine, "free", "free_tier", 100, 30)
    add_policy(engine, "pro", "subscription", 1000, None)
    add_policy(engine, "lifetime", "lifetime_monthly", 500, 60)
    add_users(
        engine,
        [
            (1, "free", "active", False, False),
            (2, "pro", "active", False, False),
            (3, "pro", "active", False, True),  # banned
            (4, "pro", "canceled", False, False),  # inactive
            (5, "lifetime", "canceled", True, False),  # lifetime deals stay eligible
            (6, "gold", "active", False, False),  # no policy for this plan
            (7, "gold", "active", False, False),
        ],
    )


def test_every_eligible_user_gets_their_plans_grant_and_no_one_else(engine: sa.Engine, run_usecase: RunUsecase) -> None:
    _standard_users(engine)
    outcome = run_usecase("distribute-credits", pinned_key="2026-11")
    assert outcome.status == "succeeded"
    assert outcome.exit_code == 0
    granted = rows(engine, "SELECT user_id, grant_type, period_key, amount, remaining FROM credit_grants ORDER BY 1")
    assert [tuple(r) for r in granted] == [
        ("1", "free_tier", "2026-11", 100, 100),
        ("2", "subscription", "2026-11", 1000, 1000),
        ("5", "lifetime_monthly", "2026-11", 500, 500),
    ]
    balances = dict(rows(engine, "SELECT user_id, balance FROM credit_accounts"))
    assert balances == {"1": 100, "2": 1000, "5": 500}
    assert outcome.stats is not None
    details = outcome.stats.as_dict()
    assert details["granted"] == 3
    assert details["banned"] == 1
    assert details["inactive"] == 1
    assert details["credits_granted"] == 1600


def test_users_whose_plan_has_no_policy_are_counted_and_named_never_given_credits(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    _standard_users(engine)
    outcome = run_usecase("distribute-credits", pinned_key="2026-11")
    assert outcome.stats is not None
    details = outcome.stats.details
    assert details["unconfigured_plan_users"] == 2
    assert details["unconfigured_sample"] == ["6", "7"]
    assert details["unconfigured_plans"] == ["gold"]
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE user_id IN ('6', '7')") == 0


def test_expiry_is_anchored_to_the_period_start_so_reruns_agree(engine: sa.Engine, run_usecase: RunUsecase) -> None:
    _standard_users(engine)
    run_usecase("distribute-credits", schedule="0 0 1 * *", time_zone="Asia/Shanghai")
    (expires_at,) = rows(engine, "SELECT expires_at FROM credit_grants WHERE user_id = '1'")[0]
    # December 2026 did not start yet at NOW; November started at 2026-10-31T16:00Z in Shanghai.
    assert expires_at == NOW.replace(month=10, day=31, hour=16) + timedelta(days=30)
    assert scalar(engine, "SELECT expires_at FROM credit_grants WHERE user_id = '2'") is None


def test_a_rerun_of_a_done_period_changes_nothing(engine: sa.Engine, run_usecase: RunUsecase) -> None:
    _standard_users(engine)
    run_usecase("distribute-credits", pinned_key="2026-11")
    before = rows(engine, "SELECT * FROM credit_grants ORDER BY grant_id") + rows(
        engine, "SELECT user_id, balance FROM credit_accounts ORDER BY 1"
    )
    again = run_usecase("distribute-credits", pinned_key="2026-11")
    assert again.status == "succeeded"
    assert again.stats is not None
    assert again.stats.details["granted"] == 0
    assert again.stats.details["already_granted"] == 3
    after = rows(engine, "SELECT * FROM credit_grants ORDER BY grant_id") + rows(
        engine, "SELECT user_id, balance FROM credit_accounts ORDER BY 1"
    )
    assert after == before


def test_a_rerun_adds_only_users_who_became_eligible_since(engine: sa.Engine, run_usecase: RunUsecase) -> None:
    _standard_users(engine)
    run_usecase("distribute-credits", pinned_key="2026-11")
    add_users(engine, [(8, "free", "active", False, False)])
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE credit_eligibility SET status = 'active' WHERE user_id = '4'"))
    again = run_usecase("distribute-credits", pinned_key="2026-11")
    assert again.stats is not None
    assert again.stats.details["granted"] == 2
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 5
    assert dict(rows(engine, "SELECT user_id, balance FROM credit_accounts"))["8"] == 100


def test_a_new_period_grants_again(engine: sa.Engine, run_usecase: RunUsecase) -> None:
    _standard_users(engine)
    run_usecase("distribute-credits", pinned_key="2026-11")
    run_usecase("distribute-credits", pinned_key="2026-12")
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 6
    assert dict(rows(engine, "SELECT user_id, balance FROM credit_accounts"))["2"] == 2000


def test_work_is_chunked_by_batch_size(engine: sa.Engine, run_usecase: RunUsecase) -> None:
    add_policy(engine, "free", "free_tier", 10, None)
    add_users(engine, [(i, "free", "active", False, False) for i in range(1, 101)])
    outcome = run_usecase("distribute-credits", pinned_key="2026-11", batch_size=7)
    assert outcome.stats is not None
    assert outcome.stats.details["chunks"] == math.ceil(100 / 7)
    assert outcome.stats.details["granted"] == 100


def test_shards_partition_the_users_so_all_shards_grant_everyone_exactly_once(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    add_policy(engine, "free", "free_tier", 10, None)
    add_users(engine, [(i, "free", "active", False, False) for i in range(-50, 250)])
    granted = 0
    for index in range(4):
        outcome = run_usecase("distribute-credits", pinned_key="2026-11", shard=Shard(index, 4))
        assert outcome.stats is not None
        granted += outcome.stats.details["granted"]
        assert outcome.stats.details["granted"] < 300  # each shard did only part of the work
    assert granted == 300
    assert scalar(engine, "SELECT count(DISTINCT user_id) FROM credit_grants") == 300
    shards = rows(engine, "SELECT shard, status FROM job_runs ORDER BY shard")
    assert [tuple(r) for r in shards] == [(0, "succeeded"), (1, "succeeded"), (2, "succeeded"), (3, "succeeded")]


def test_a_dry_run_reports_what_it_would_grant_and_writes_nothing_to_the_ledger(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    _standard_users(engine)
    outcome = run_usecase("distribute-credits", pinned_key="2026-11", dry_run=True)
    assert outcome.status == "succeeded"
    assert outcome.stats is not None
    assert outcome.stats.details["would_grant"] == 3
    assert "granted" not in outcome.stats.details  # nothing was granted, and the audit row must not say so
    assert outcome.stats.credits == {}  # no credits_granted: only would_… counts
    assert outcome.stats.details["would_grant_credits"] == 1600
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 0
    assert scalar(engine, "SELECT count(*) FROM credit_accounts") == 0
    assert [tuple(r) for r in rows(engine, "SELECT status, dry_run FROM job_runs")] == [("succeeded", True)]


def test_the_audit_row_records_identity_status_and_counts(engine: sa.Engine, run_usecase: RunUsecase) -> None:
    _standard_users(engine)
    outcome = run_usecase("distribute-credits", job="monthly-credits", trigger="manual", pinned_key="2026-10")
    (row,) = rows(engine, "SELECT * FROM job_runs")
    assert row.run_id == outcome.run_id
    assert (row.job, row.usecase, row.period_key, row.trigger, row.status) == (
        "monthly-credits",
        "distribute-credits",
        "2026-10",
        "manual",
        "succeeded",
    )
    assert row.finished_at is not None
    assert row.stats["granted"] == 3
    assert row.stats["credits_granted"] == 1600
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE cause_run_id = :r", r=outcome.run_id) == 3


def test_a_chunk_that_violates_a_constraint_fails_its_users_and_the_run_but_not_the_other_chunks(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    # Five users whose balance sits at the bound: their grants break credit_accounts_balance_bounded.
    add_policy(engine, "free", "free_tier", 10, None)
    add_users(engine, [(i, "free", "active", False, False) for i in range(1, 26)])
    for user in range(11, 16):
        fill_balance_to(engine, user, MAX_BALANCE - 5)
    outcome = run_usecase("distribute-credits", pinned_key="2026-11", batch_size=5)
    assert outcome.status == "failed"
    assert outcome.exit_code == 1
    assert outcome.stats is not None
    assert outcome.stats.failed == 5
    assert outcome.error == "5 items failed"
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE period_key IS NOT NULL") == 20
    assert scalar(engine, "SELECT status FROM job_runs") == "failed"
