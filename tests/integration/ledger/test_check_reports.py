"""`credit-jobs check` sees what it claims to: each corruption below exits 1 naming its rows, a live run
is never reported as dead, and `--period-key` prints the coverage of a period. Real PostgreSQL, the CLI in-process."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from credit_jobs.adapters.db_clock import database_now
from credit_jobs.adapters.run_guard import RunGuard, guard_key
from credit_jobs.entrypoints.cli import main
from credit_jobs.usecases.check_invariants import check_invariants
from tests.support.ledger import NOW, add_gift, add_policy, add_users, live_month, rows
from tests.support.runs import RunUsecase

Cli = Callable[..., tuple[int, dict[str, Any], str]]


@pytest.fixture
def check(database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("LOG_FORMAT", "json")

    def call(*argv: str) -> tuple[int, dict[str, Any], str]:
        capsys.readouterr()  # drop what the setup printed (runs before logging is configured log to stdout)
        code = main(["check", "--json", *argv])
        captured = capsys.readouterr()
        return code, json.loads(captured.out) if captured.out.strip() else {}, captured.err

    return call


def _distributed(engine: sa.Engine, run_usecase: RunUsecase) -> str:
    """Users 1 and 2 granted a month at the database's clock (the clock the in-process CLI's `consume` and `check`
    read), of a month whose grants stay live for the test; returns the month's key."""
    add_policy(engine, "free", "free_tier", 100, 30)
    add_policy(engine, "pro", "subscription", 1000, 30)
    add_users(engine, [(1, "free", "active", False, False), (2, "free", "active", False, False)])
    month = live_month(engine)
    assert run_usecase("distribute-credits", now=database_now(engine), pinned_key=month).status == "succeeded"
    return month


def _sql(engine: sa.Engine, sql: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def _insert_running(engine: sa.Engine, job: str, period_key: str, started: Any) -> uuid.UUID:
    run_id = uuid.uuid4()
    _sql(
        engine,
        "INSERT INTO job_runs (run_id, job, usecase, period_key, trigger, status, started_at, heartbeat_at) "
        "VALUES (:r, :j, 'distribute-credits', :k, 'schedule', 'running', :s, :s)",
        r=run_id,
        j=job,
        k=period_key,
        s=started,
    )
    return run_id


def test_a_sound_ledger_passes_every_check(engine: sa.Engine, run_usecase: RunUsecase, check: Cli) -> None:
    _distributed(engine, run_usecase)
    code, report, _ = check()
    assert (code, report["ok"], report["violations"]) == (0, True, {})


def test_two_periodic_grants_for_one_user_and_period_under_different_types(
    engine: sa.Engine, run_usecase: RunUsecase, check: Cli
) -> None:
    month = _distributed(engine, run_usecase)
    # what the old (user, grant type, period) index let a rerun write after a plan change — written around the new
    # index as pre-0006 data would be (marked by the migration)
    _sql(
        engine,
        "INSERT INTO credit_grants (user_id, grant_type, grant_family, period_key, amount, remaining, cause_run_id, "
        "legacy_duplicate) VALUES ('1', 'subscription', 'plan', :k, 1000, 1000, gen_random_uuid(), true)",
        k=month,
    )
    _sql(engine, "UPDATE credit_accounts SET balance = balance + 1000 WHERE user_id = '1'")
    code, report, _ = check()
    assert code == 1
    (row,) = report["violations"]["one_periodic_grant_per_family_period"]
    assert (row["userId"], row["periodKey"], row["grants"]) == ("1", month, 2)
    assert row["grantTypes"] == ["free_tier", "subscription"]
    assert len(row["grantIds"]) == 2


def test_a_running_row_whose_holder_is_dead_is_reported_and_a_live_one_is_not(engine: sa.Engine, check: Cli) -> None:
    dead = _insert_running(engine, "monthly", "2026-11", database_now(engine) - timedelta(days=3))
    live = _insert_running(
        engine, "monthly", "2026-12", database_now(engine) - timedelta(days=3)
    )  # old heartbeat, but held
    guard = RunGuard(engine, guard_key("monthly", "2026-12", 0))
    assert guard.try_acquire()
    try:
        code, report, _ = check()
    finally:
        guard.release()
    assert code == 1
    (row,) = report["violations"]["running_run_has_live_holder"]
    assert row["jobRunId"] == str(dead)
    assert row["jobRunId"] != str(live)
    # once the live holder is gone too, both are reported
    code, report, _ = check()
    assert sorted(r["jobRunId"] for r in report["violations"]["running_run_has_live_holder"]) == sorted(
        [str(dead), str(live)]
    )


def test_a_grant_marked_expired_without_an_expiry_entry(engine: sa.Engine, run_usecase: RunUsecase, check: Cli) -> None:
    _distributed(engine, run_usecase)
    # user 1 spends all of it (usage entries keep the grant conserved), then the grant is marked expired by hand
    assert main(["consume", "1", "100", "--request-id", "spend-all"]) == 0
    (grant_id,) = rows(engine, "SELECT grant_id FROM credit_grants WHERE user_id = '1'")[0]
    _sql(engine, "UPDATE credit_grants SET expired_at = :t WHERE grant_id = :g", t=database_now(engine), g=grant_id)
    code, report, _ = check()
    assert code == 1
    assert list(report["violations"]) == ["expired_once"]
    (row,) = report["violations"]["expired_once"]
    assert (row["grantId"], row["expiryEntries"]) == (str(grant_id), 0)


def test_a_usage_entry_against_another_users_grant(engine: sa.Engine, run_usecase: RunUsecase, check: Cli) -> None:
    _distributed(engine, run_usecase)
    (grant_id,) = rows(engine, "SELECT grant_id FROM credit_grants WHERE user_id = '1'")[0]
    # user 2's usage is taken out of user 1's grant (and user 1's balance): sums still agree, ownership does not
    _sql(
        engine,
        "INSERT INTO credit_entries (user_id, grant_id, kind, amount, cause_request_id) "
        "VALUES ('2', :g, 'usage', 5, 'x')",
        g=grant_id,
    )
    _sql(engine, "UPDATE credit_grants SET remaining = remaining - 5 WHERE grant_id = :g", g=grant_id)
    _sql(engine, "UPDATE credit_accounts SET balance = balance - 5 WHERE user_id = '1'")
    code, report, _ = check()
    assert code == 1
    assert list(report["violations"]) == ["entry_user_is_grant_user"]
    (row,) = report["violations"]["entry_user_is_grant_user"]
    assert (row["grantId"], row["entryUserId"], row["grantUserId"]) == (str(grant_id), "2", "1")


def test_rows_breaking_the_ledger_bounds(engine: sa.Engine, run_usecase: RunUsecase, check: Cli) -> None:
    _distributed(engine, run_usecase)
    # rows written before migration 0004's NOT VALID constraints existed
    _sql(engine, "ALTER TABLE credit_grants DROP CONSTRAINT credit_grants_amount_bounded")
    _sql(engine, "ALTER TABLE credit_accounts DROP CONSTRAINT credit_accounts_balance_bounded")
    _sql(
        engine,
        "INSERT INTO credit_grants (user_id, grant_type, amount, remaining, cause_request_id, idempotency_key) "
        "VALUES ('7', 'gift', 9223372036854774808, 9223372036854774808, 'big', 'big')",
    )
    _sql(engine, "INSERT INTO credit_accounts (user_id, balance) VALUES ('7', 9223372036854774808)")
    code, report, _ = check()
    assert code == 1
    assert list(report["violations"]) == ["within_bounds"]
    found = {(r["tableName"], r["rowId"]) for r in report["violations"]["within_bounds"]}
    assert ("credit_accounts", "7") in found
    assert any(table == "credit_grants" for table, _ in found)


def test_period_coverage_names_eligible_users_without_the_periods_grant(
    engine: sa.Engine, run_usecase: RunUsecase, check: Cli
) -> None:
    month = _distributed(engine, run_usecase)
    add_users(engine, [(3, "pro", "active", False, False), (4, "free", "canceled", False, False)])
    code, report, _ = check("--period-key", month, "--job", "distribute-credits")
    assert code == 0  # coverage informs; eligibility moves on after a run, so a gap is not a broken invariant
    coverage = report["coverage"]
    assert (coverage["periodKey"], coverage["grantFamily"]) == (month, "plan")
    assert (coverage["eligible"], coverage["missing"], coverage["missingSample"]) == (3, 1, ["3"])
    assert coverage["runs"] == {"succeeded": 1}


def test_check_period_key_must_be_a_period_key(check: Cli) -> None:
    code, _, err = check("--period-key", "November")
    assert code == 2
    assert "November" in err


@pytest.mark.parametrize(
    ("key", "kind"), [("2026-11-05", "daily"), ("2026-W45", "weekly"), ("2026-11-05T03+00:00", "hourly")]
)
def test_check_period_key_must_be_of_the_jobs_period(
    check: Cli, monkeypatch: pytest.MonkeyPatch, key: str, kind: str
) -> None:
    """Coverage of a daily key for a monthly job would report a period nobody distributes: refused, naming both."""
    monkeypatch.delenv("CREDITJOB_PERIOD", raising=False)
    code, _, err = check("--period-key", key)
    assert code == 2
    assert f"is a {kind} period key, but the job's period is monthly" in err
    monkeypatch.setenv("CREDITJOB_PERIOD", kind)  # the job's own period: accepted
    code, report, _ = check("--period-key", key)
    assert code == 0, report
    assert report["coverage"]["periodKey"] == key


def test_period_coverage_names_the_periods_runs_stuck_in_running_with_no_live_holder(
    engine: sa.Engine, run_usecase: RunUsecase, check: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    month = _distributed(engine, run_usecase)
    stuck = _insert_running(engine, "distribute-credits", month, database_now(engine) - timedelta(days=1))
    _insert_running(
        engine, "distribute-credits", "1999-12", database_now(engine) - timedelta(days=1)
    )  # another period: not named
    code, report, _ = check("--period-key", month, "--job", "distribute-credits")
    assert code == 1  # a dead holder is also an invariant violation
    assert report["coverage"]["stuckRuns"] == [str(stuck)]
    assert report["coverage"]["runs"] == {"running": 1, "succeeded": 1}
    assert main(["check", "--period-key", month]) == 1
    assert f"1 runs stuck in running with no live holder: {stuck}" in capsys.readouterr().out


def test_check_reports_a_corrupted_balance(engine: sa.Engine) -> None:
    add_gift(engine, 1, 40, "a", expires_in_days=None, granted_at=NOW - timedelta(days=10))
    assert check_invariants(engine).ok
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE credit_accounts SET balance = 41"))
    report = check_invariants(engine)
    assert not report.ok
    assert list(report.violations) == ["balance_equals_grants"]
    assert report.violations["balance_equals_grants"][0]["user_id"] == "1"
