"""statement_timeout and lock_timeout for job runs: a lock held by someone else fails the chunk with a
clear "lock timeout" (exit 1, retryable) instead of hanging the run until the Job's activeDeadlineSeconds.

The settings are `CREDITJOBS_STATEMENT_TIMEOUT_SECONDS` (default 300) and `CREDITJOBS_LOCK_TIMEOUT_SECONDS` (default
30), applied with `SET LOCAL` in every transaction of the run's engine (tests/integration/runs/test_guard_pgbouncer.py
shows the same through PgBouncer).
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from credit_jobs.domain.period_keys import Period
from credit_jobs.domain.run_model import RunContext, RunStats, UsecaseSpec
from credit_jobs.entrypoints.cli import main
from credit_jobs.usecases import registry
from tests.support import cli_process
from tests.support.ledger import add_policy, add_users, rows, scalar

PROBE = "probe-session-settings"


@pytest.fixture
def probe(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[list[dict[str, str]], Any]:
    """A usecase that reports the settings its transactions see, run through the real CLI `run` path in-process."""
    seen: list[dict[str, str]] = []
    sql: list[str] = []

    def run(engine: sa.Engine, ctx: RunContext) -> RunStats:
        with engine.begin() as conn:  # a chunk's transaction
            seen.append(
                {
                    name: conn.execute(sa.text(f"SHOW {name}")).scalar_one()
                    for name in ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout")
                }
            )
            for statement in sql:
                conn.execute(sa.text(statement))
        return RunStats(processed=1)

    monkeypatch.setitem(registry.USECASES, PROBE, UsecaseSpec(PROBE, Period.DAILY, run, "test probe"))
    for var in (
        "CREDITJOBS_STATEMENT_TIMEOUT_SECONDS",
        "CREDITJOBS_LOCK_TIMEOUT_SECONDS",
        "CREDITJOBS_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS",
        "CREDITJOB_NAME",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("LOG_FORMAT", "json")

    def call(*statements: str) -> tuple[int, str, str]:
        sql[:] = statements
        code = main(["run", PROBE, "--period-key", "2026-11-28"])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return seen, call


def test_a_run_applies_the_default_timeouts(probe: tuple[list[dict[str, str]], Any]) -> None:
    seen, call = probe
    code, _, err = call()
    assert code == 0, err
    assert seen == [{"lock_timeout": "30s", "statement_timeout": "5min", "idle_in_transaction_session_timeout": "1min"}]


def test_the_timeouts_come_from_the_environment(
    probe: tuple[list[dict[str, str]], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen, call = probe
    monkeypatch.setenv("CREDITJOBS_LOCK_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("CREDITJOBS_STATEMENT_TIMEOUT_SECONDS", "0")
    monkeypatch.setenv("CREDITJOBS_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS", "25")
    code, _, err = call()
    assert code == 0, err
    assert seen == [{"lock_timeout": "2500ms", "statement_timeout": "0", "idle_in_transaction_session_timeout": "25s"}]


def test_a_statement_running_past_statement_timeout_fails_the_run_with_exit_1(
    probe: tuple[list[dict[str, str]], Any], monkeypatch: pytest.MonkeyPatch, engine: sa.Engine
) -> None:
    _, call = probe
    monkeypatch.setenv("CREDITJOBS_STATEMENT_TIMEOUT_SECONDS", "0.2")
    code, _, err = call("SELECT pg_sleep(30)")
    assert code == 1, err
    (error,) = [line for line in err.splitlines() if line.startswith("credit-jobs: error:")]
    assert "canceling statement due to statement timeout" in error
    assert "CREDITJOBS_STATEMENT_TIMEOUT_SECONDS" in error
    assert [tuple(r) for r in rows(engine, "SELECT status FROM job_runs")] == [("failed",)]


def test_a_row_lock_held_elsewhere_fails_the_chunk_with_lock_timeout_exit_1(
    engine: sa.Engine, database_url: str
) -> None:
    add_policy(engine, "free", "free_tier", 10, None)
    add_users(engine, [(u, "free", "active", False, False) for u in range(1, 11)])
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO credit_accounts (user_id, balance) VALUES (3, 0)"))
    env = cli_process.cli_env(database_url, CREDITJOB_PERIOD_KEY="2026-11", CREDITJOBS_LOCK_TIMEOUT_SECONDS="1")
    with engine.connect() as blocker:  # someone else's transaction holds user 3's account row, and stays
        blocker.execute(sa.text("SELECT 1 FROM credit_accounts WHERE user_id = '3' FOR UPDATE"))
        done = cli_process.run(["run", "distribute-credits"], env)
        blocker.rollback()
    assert done.returncode == 1, done.stderr
    errors = cli_process.error_lines(done.stderr)
    assert len(errors) == 1, done.stderr
    assert "canceling statement due to lock timeout" in errors[0]
    assert "CREDITJOBS_LOCK_TIMEOUT_SECONDS" in errors[0]
    assert "a retry resumes" in errors[0]
    run = rows(engine, "SELECT status, error FROM job_runs")
    assert [r.status for r in run] == ["failed"]
    assert "lock timeout" in run[0].error
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 0  # the chunk was rolled back whole

    retry = cli_process.run(["run", "distribute-credits"], env)  # the blocker is gone: the retry completes
    assert retry.returncode == 0, retry.stderr
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 10


@pytest.mark.parametrize("value", ["-1", "nan", "100000"])
def test_an_out_of_range_timeout_is_refused_with_exit_2_and_nothing_written(
    engine: sa.Engine, database_url: str, value: str
) -> None:
    env = cli_process.cli_env(database_url, CREDITJOB_PERIOD_KEY="2026-11", CREDITJOBS_LOCK_TIMEOUT_SECONDS=value)
    done = cli_process.run(["run", "distribute-credits"], env)
    assert done.returncode == 2, done.stderr
    errors = cli_process.error_lines(done.stderr)
    assert len(errors) == 1, done.stderr
    assert f"CREDITJOBS_LOCK_TIMEOUT_SECONDS={value} is out of range" in errors[0]
    assert scalar(engine, "SELECT count(*) FROM job_runs") == 0


def test_a_connection_lost_between_transactions_surfaces_as_a_database_error_and_the_pool_recovers(
    database_url: str, engine: sa.Engine
) -> None:
    """The per-transaction SET runs in SQLAlchemy's begin hook: its failure must look like any other DBAPIError
    (the usecases turn those into a failed run, exit 1), and the dead connection must leave the pool."""
    from sqlalchemy.exc import OperationalError

    from credit_jobs.adapters import database

    timed = database.create_engine(database_url, timeouts=database.SessionTimeouts())
    try:
        with timed.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            conn.commit()
            with engine.connect() as admin:  # a failover, a proxy restart, an admin's pg_terminate_backend
                admin.execute(sa.text("SELECT pg_terminate_backend(:p, 10000)"), {"p": pid})  # waits for the exit
                admin.commit()
            with pytest.raises(OperationalError) as lost:  # the next transaction's first statement: the SET
                conn.execute(sa.text("SELECT 1"))
            assert lost.value.connection_invalidated
        with timed.connect() as conn:
            assert conn.execute(sa.text("SHOW lock_timeout")).scalar_one() == "30s"
    finally:
        timed.dispose()


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"CREDITJOBS_NETWORK_TIMEOUT_SECONDS": "1"}, "CREDITJOBS_NETWORK_TIMEOUT_SECONDS=1 is out of range"),
        ({"CREDITJOBS_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS": "100000"}, "is out of range"),
        (
            {"CREDITJOBS_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS": "15", "CREDITJOBS_HEARTBEAT_SECONDS": "10"},
            "would end the run guard's transaction between two heartbeats",
        ),
    ],
)
def test_a_connection_deadline_out_of_range_is_refused_with_exit_2_and_nothing_written(
    engine: sa.Engine, database_url: str, variables: dict[str, str], message: str
) -> None:
    env = cli_process.cli_env(database_url, CREDITJOB_PERIOD_KEY="2026-11", **variables)
    done = cli_process.run(["run", "distribute-credits"], env)
    assert done.returncode == 2, done.stderr
    errors = cli_process.error_lines(done.stderr)
    assert len(errors) == 1, done.stderr
    assert message in errors[0], done.stderr
    assert scalar(engine, "SELECT count(*) FROM job_runs") == 0
