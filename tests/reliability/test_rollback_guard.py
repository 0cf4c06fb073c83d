"""A rollback and a distribution of the same job and period never run at once — real `credit-jobs` processes.

The test holds one account row locked, so the first process stops mid-chunk (its transaction open, its guard held);
the second process is started against it: a rollback is refused with exit 2 and changes nothing, a distribution is
skipped (exit 0) and grants nothing. Released, the first finishes and the ledger is sound.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from credit_jobs.adapters import database
from credit_jobs.domain.sharding import shard_of
from credit_jobs.usecases.check_invariants import check_invariants
from tests.support import cli_process
from tests.support.ledger import add_policy, add_users, rows, scalar
from tests.support.saas_template import create_template_with_one_live_grant

PERIOD = "2026-11"
USERS = 50
DEADLINE_S = 60.0


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    eng = database.create_engine(database_url)
    yield eng
    eng.dispose()


DISTRIBUTE = ["run", "distribute-credits", "--period-key", PERIOD]


def _env(database_url: str) -> dict[str, str]:
    # a loaded machine must not turn the deliberate wait into a lock timeout
    return cli_process.cli_env(database_url, CREDITJOBS_LOCK_TIMEOUT_SECONDS="300")


def _seed(engine: sa.Engine) -> None:
    add_policy(engine, "pro", "subscription", 100, None)
    add_users(engine, [(u, "pro", "active", False, False) for u in range(1, USERS + 1)])


def _wait_until_blocked(engine: sa.Engine, proc: subprocess.Popen[str], usecase: str) -> None:
    """Poll (with a deadline) until `proc` holds the guard (its audit row is running) and waits on our row lock."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        running = scalar(engine, "SELECT count(*) FROM job_runs WHERE status = 'running' AND usecase = :u", u=usecase)
        waiting = scalar(
            engine,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        if running == 1 and waiting >= 1:
            return
        time.sleep(0.1)
    raise AssertionError(f"{usecase} never got blocked on the held row lock")


def _hold_account_lock(engine: sa.Engine, user_id: str) -> Any:
    conn = engine.connect()
    conn.execute(sa.text("SELECT 1 FROM credit_accounts WHERE user_id = :u FOR UPDATE"), {"u": user_id})
    return conn


def _beside(
    engine: sa.Engine, env: dict[str, str], lock_user: str, first: list[str], usecase: str, second: list[str]
) -> subprocess.CompletedProcess[str]:
    """Run `second` while `first` (a real process of `usecase`) holds its guard and waits on `lock_user`'s account
    row, which we hold; then let `first` finish (it must succeed). Returns what `second` did."""
    holder = _hold_account_lock(engine, lock_user)
    running = cli_process.start(first, env)
    try:
        _wait_until_blocked(engine, running, usecase)
        beside = cli_process.run(second, env)
    finally:
        holder.rollback()
        holder.close()
    _, err = running.communicate(timeout=DEADLINE_S)
    assert running.returncode == 0, err
    return beside


def test_a_rollback_is_refused_while_a_distribution_of_the_period_runs(database_url: str, engine: sa.Engine) -> None:
    _seed(engine)
    with engine.begin() as conn:  # user 1's account exists, so the distribution's balance upsert waits on it
        conn.execute(sa.text("INSERT INTO credit_accounts (user_id, balance) VALUES ('1', 0)"))
    env = _env(database_url)
    rollback = ["rollback", "distribute-credits", "--period-key", PERIOD, "--reason", "wrong amount"]
    refused = _beside(engine, env, "1", DISTRIBUTE, "distribute-credits", rollback)
    assert refused.returncode == 2, refused.stderr
    (line,) = cli_process.error_lines(refused.stderr)
    assert "rollback of distribute-credits period 2026-11 refused: running elsewhere (run" in line
    # nothing was rolled back: every grant is live and whole
    assert (
        scalar(engine, "SELECT count(*) FROM credit_grants WHERE rolled_back_at IS NULL AND remaining = 100") == USERS
    )
    assert scalar(engine, "SELECT count(*) FROM credit_entries") == 0
    # once the distribution is done, the rollback goes through
    done = cli_process.run(rollback, env)
    assert done.returncode == 0, done.stderr
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE rolled_back_at IS NOT NULL") == USERS
    assert check_invariants(engine).ok


def test_a_distribution_cannot_start_while_a_rollback_of_its_period_runs(database_url: str, engine: sa.Engine) -> None:
    _seed(engine)
    env = _env(database_url)
    assert cli_process.run(DISTRIBUTE, env).returncode == 0
    # the rollback's chunk locks grants, then waits on the last user's account
    rollback = ["rollback", "distribute-credits", "--period-key", PERIOD, "--reason", "r"]
    skipped = _beside(engine, env, str(USERS), rollback, "rollback-distribute-credits", DISTRIBUTE)
    assert skipped.returncode == 0, skipped.stderr
    (finished,) = [line for line in cli_process.log_lines(skipped.stderr) if line["event"] == "run.skipped"]
    assert finished["error"].startswith("running elsewhere (run ")
    # the rollback was whole, and the skipped distribution granted nothing on top of it
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == USERS
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE rolled_back_at IS NOT NULL") == USERS
    assert scalar(engine, "SELECT sum(balance) FROM credit_accounts") == 0
    assert check_invariants(engine).ok


# --- a rollback racing a distribution of the same grant family and period, under any job name or shard -----------

RACE_USERS = 300


def _received(engine: sa.Engine, user_id: str) -> int:
    """What the user was given for the period: the live grant, plus what they kept of rolled-back ones."""
    return int(
        scalar(
            engine,
            "SELECT coalesce(sum(CASE WHEN rolled_back_at IS NULL THEN amount ELSE rollback_kept END), 0) "
            "FROM credit_grants WHERE user_id = :u AND period_key = :p AND grant_family = 'plan'",
            u=user_id,
            p=PERIOD,
        )
    )


@pytest.mark.parametrize(
    ("shard", "rollback_args"),
    [
        # the CronJob's own run (a retry, a catch-up, a run-now) and the README's rollback, which names no job
        (None, []),
        # the same job, distributing one shard: the rollback's guard was (job, period, shard 0) only
        (1, ["--job", "monthly-credits"]),
    ],
    ids=["rollback-without-job", "distribution-of-shard-1"],
)
def test_a_rollback_racing_a_distribution_of_the_period_never_over_grants(
    database_url: str, engine: sa.Engine, shard: int | None, rollback_args: list[str]
) -> None:
    """Policy 100 per period; a user spent 30 of it. A distribution of the period (a retry) waits behind an app
    transaction updating an earlier user's grant (its unique check waits on that row); meanwhile a rollback of the
    first user runs. Whichever way it goes, no user
    may end above the policy: before the fix, the rolled-back grant (kept 30) plus a fresh grant of 100 — 130."""
    users = [str(u) for u in range(1, RACE_USERS + 1)]
    mine = sorted(u for u in users if shard is None or shard_of(u, 2) == shard)  # the distribution's, in its order
    held, target = mine[0], mine[len(mine) // 2]
    add_policy(engine, "pro", "subscription", 100, None)
    add_users(engine, [(u, "pro", "active", False, False) for u in users])
    env = _env(database_url)
    job_env = {**env, "CREDITJOB_NAME": "monthly-credits"}
    rollback_command = ["rollback", "distribute-credits", "--period-key", PERIOD, "--reason", "wrong plan"]
    rollback_command += ["--user", target, *rollback_args]
    shard_args = [] if shard is None else ["--shard", f"{shard}/2"]
    assert cli_process.run(["run", "distribute-credits", "--period-key", PERIOD], job_env).returncode == 0
    assert cli_process.run(["consume", target, "30", "--request-id", "order-1"], env).returncode == 0
    holder = engine.connect()  # an app transaction on `held`: a consume in progress, its grant row updated
    holder.execute(sa.text("UPDATE credit_grants SET remaining = remaining WHERE user_id = :u"), {"u": held})
    distribution = cli_process.start(["run", "distribute-credits", "--period-key", PERIOD, *shard_args], job_env)
    try:
        _wait_until_blocked(engine, distribution, "distribute-credits")
        rollback = cli_process.run(rollback_command, env)
    finally:
        holder.rollback()
        holder.close()
    _, err = distribution.communicate(timeout=DEADLINE_S)
    assert distribution.returncode == 0, err
    over = rows(
        engine,
        "SELECT user_id, sum(CASE WHEN rolled_back_at IS NULL THEN amount ELSE rollback_kept END) AS given "
        "FROM credit_grants WHERE period_key = :p GROUP BY user_id HAVING "
        "sum(CASE WHEN rolled_back_at IS NULL THEN amount ELSE rollback_kept END) > 100",
        p=PERIOD,
    )
    assert [tuple(r) for r in over] == []
    assert rollback.returncode == 2, rollback.stderr  # refused: a distribution of the period is running
    (line,) = cli_process.error_lines(rollback.stderr)
    assert "a distribution of grant family plan, period 2026-11, is running" in line, line
    assert _received(engine, target) == 100
    # after the distribution, the rollback and its redo go through: 30 kept + 70 granted
    done = cli_process.run(rollback_command, env)
    assert done.returncode == 0, done.stderr
    assert cli_process.run(["run", "distribute-credits", "--period-key", PERIOD], job_env).returncode == 0
    assert _received(engine, target) == 100
    assert check_invariants(engine).ok


# --- an import of the template and a distribution of its cut-over month exclude each other -----------------------

AS_OF = "2026-11-20T12:00:00+00:00"  # the cut-over: November is the month the import holds


def _template_with_one_live_grant(engine: sa.Engine) -> None:
    """User 'a' holds 1000 of November in the template, and is one of the application's users."""
    with engine.begin() as conn:
        create_template_with_one_live_grant(conn)
        conn.exec_driver_sql("INSERT INTO credit_accounts (user_id, balance) VALUES ('a', 0), ('1', 0)")


def test_an_import_is_refused_while_a_distribution_of_its_cut_over_month_runs(
    database_url: str, engine: sa.Engine
) -> None:
    _seed(engine)
    _template_with_one_live_grant(engine)
    env = _env(database_url)
    # the distribution's chunk waits on user 1's balance row
    refused = _beside(engine, env, "1", DISTRIBUTE, "distribute-credits", ["import", "saas-template", "--as-of", AS_OF])
    assert refused.returncode == 2, refused.stderr
    (line,) = cli_process.error_lines(refused.stderr)
    assert "import refused: a distribution of grant family plan, period 2026-11, is running (run " in line, line
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE user_id = 'a'") == 0  # nothing imported
    assert cli_process.run(["import", "saas-template", "--as-of", AS_OF], env).returncode == 0  # after it: imports
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE user_id = 'a'") == 1
    assert check_invariants(engine).ok


def test_a_distribution_of_the_cut_over_month_is_skipped_while_the_import_runs(
    database_url: str, engine: sa.Engine
) -> None:
    _seed(engine)
    _template_with_one_live_grant(engine)
    env = _env(database_url)
    # the import's chunk waits on user a's balance row
    importing = ["import", "saas-template", "--as-of", AS_OF]
    skipped = _beside(engine, env, "a", importing, "import-saas-template", DISTRIBUTE)
    assert skipped.returncode == 0, skipped.stderr
    (finished,) = [line for line in cli_process.log_lines(skipped.stderr) if line["event"] == "run.skipped"]
    assert finished["error"].startswith("an import of grant family plan, period 2026-11, is running (run ")
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE period_key = :p", p=PERIOD) == 1  # a's, imported
    assert check_invariants(engine).ok
