"""The single-run guard: a live holder makes a second run step aside; a dead holder's row is taken over."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from credit_jobs.adapters import database
from credit_jobs.adapters.run_guard import guard_key
from credit_jobs.domain.sharding import Shard
from tests.support.ledger import NOW, add_policy, add_users, rows, scalar
from tests.support.runs import RunUsecase


def test_a_run_finding_a_live_holder_is_recorded_as_skipped_and_exits_0(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    add_policy(engine, "free", "free_tier", 10, None)
    add_users(engine, [(1, "free", "active", False, False)])
    with engine.connect() as holder:  # another process's session holding the guard
        holder.execute(
            sa.text("SELECT pg_advisory_lock(hashtextextended(:k, 0))"),
            {"k": guard_key("distribute-credits", "2026-11", 0)},
        )
        outcome = run_usecase("distribute-credits", pinned_key="2026-11")
        holder.commit()
    assert (outcome.status, outcome.exit_code) == ("skipped", 0)
    assert outcome.error is not None
    assert outcome.error.startswith("running elsewhere")
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 0
    assert [tuple(r) for r in rows(engine, "SELECT status, error FROM job_runs")] == [("skipped", "running elsewhere")]


@pytest.mark.parametrize(
    ("held_period", "held_shard", "status"),
    [
        ("2026-10", 0, "succeeded"),  # another period of the same shard
        ("2026-11", 1, "succeeded"),  # the same period, another shard
        ("2026-11", 0, "skipped"),  # the same period and shard: the control, so the cases above can fail
    ],
    ids=["other-period", "other-shard", "same-period-and-shard"],
)
def test_the_guard_is_per_period_and_shard(
    engine: sa.Engine, run_usecase: RunUsecase, held_period: str, held_shard: int, status: str
) -> None:
    add_policy(engine, "free", "free_tier", 10, None)
    add_users(engine, [(user, "free", "active", False, False) for user in range(1, 5)])
    with engine.connect() as holder:
        holder.execute(
            sa.text("SELECT pg_advisory_lock(hashtextextended(:k, 0))"),
            {"k": guard_key("distribute-credits", held_period, held_shard)},
        )
        outcome = run_usecase("distribute-credits", pinned_key="2026-11", shard=Shard(0, 2))
        holder.commit()
    assert outcome.status == status, outcome.error
    granted = scalar(engine, "SELECT count(*) FROM credit_grants")
    assert granted == (sum(1 for user in range(1, 5) if Shard(0, 2).owns(str(user))) if status == "succeeded" else 0)


def test_a_row_left_running_by_a_dead_holder_is_taken_over(engine: sa.Engine, run_usecase: RunUsecase) -> None:
    add_policy(engine, "free", "free_tier", 10, None)
    add_users(engine, [(1, "free", "active", False, False)])
    dead = uuid.uuid4()
    with engine.begin() as conn:  # what a SIGKILLed pod leaves behind: a running row, no session, no lock
        conn.execute(
            sa.text(
                "INSERT INTO job_runs (run_id, job, usecase, period_key, trigger, status, started_at) "
                "VALUES (:r, 'distribute-credits', 'distribute-credits', '2026-11', 'schedule', 'running', :t)"
            ),
            {"r": dead, "t": NOW},
        )
    outcome = run_usecase("distribute-credits", pinned_key="2026-11")
    assert outcome.status == "succeeded"
    old = rows(engine, "SELECT status, error FROM job_runs WHERE run_id = :r", r=dead)[0]
    assert old.status == "failed"
    assert f"taken over by run {outcome.run_id}" in old.error
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 1


def test_a_database_error_before_the_work_starts_is_a_failed_run_not_a_crash(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    with engine.begin() as conn:  # the schema version says "head", but the audit table is gone
        conn.execute(sa.text("DROP TABLE job_runs"))
    outcome = run_usecase("distribute-credits", pinned_key="2026-11")
    assert (outcome.status, outcome.exit_code) == ("failed", 1)
    assert outcome.error is not None
    assert outcome.error.startswith('database error before the work started: relation "job_runs" does not exist')


def test_a_dry_run_never_takes_over_a_running_row(engine: sa.Engine, run_usecase: RunUsecase) -> None:
    add_policy(engine, "free", "free_tier", 10, None)
    add_users(engine, [(1, "free", "active", False, False)])
    live = uuid.uuid4()
    with engine.begin() as conn:  # a run in progress elsewhere (a dry run takes no lock, so it cannot tell)
        conn.execute(
            sa.text(
                "INSERT INTO job_runs (run_id, job, usecase, period_key, trigger, status, started_at) "
                "VALUES (:r, 'distribute-credits', 'distribute-credits', '2026-11', 'schedule', 'running', :t)"
            ),
            {"r": live, "t": NOW},
        )
    outcome = run_usecase("distribute-credits", pinned_key="2026-11", dry_run=True)
    assert outcome.status == "succeeded"
    assert scalar(engine, "SELECT status FROM job_runs WHERE run_id = :r", r=live) == "running"


def test_a_guard_whose_session_is_killed_stops_the_run_before_the_next_chunk(engine: sa.Engine) -> None:
    from credit_jobs.adapters.run_guard import RunGuard
    from credit_jobs.domain.errors import RunFailed

    guard = RunGuard(engine, guard_key("distribute-credits", "2026-11", 0), heartbeat_seconds=0.05)
    assert guard.try_acquire()
    try:
        guard.check()  # held: no error
        guard.start_heartbeat(uuid.uuid4())
        with engine.connect() as admin:  # what a failover or a proxy restart does to the guard's session
            admin.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"
                )
            )
            admin.commit()
        deadline = time.monotonic() + 10
        while not guard.lost and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(RunFailed, match="lost the run guard"):
            guard.check()
    finally:
        guard.release()  # must not raise on the dead connection (it would hide the run's real outcome)


def _wait_for(what: str, condition: Callable[[], bool], *, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_heartbeat_below_idle_in_transaction_session_timeout_keeps_the_guard(
    engine: sa.Engine, database_url: str
) -> None:
    """The guard is an open transaction: the server's idle-in-transaction timeout must not catch it between beats."""
    from credit_jobs.adapters.run_guard import RunGuard

    db = sa.engine.make_url(database_url).database
    with engine.connect() as conn:
        conn.execute(sa.text(f"ALTER DATABASE \"{db}\" SET idle_in_transaction_session_timeout = '1s'"))
        conn.commit()
    strict = database.create_engine(database_url)
    guard = RunGuard(strict, guard_key("distribute-credits", "2026-11", 0), heartbeat_seconds=0.2)
    try:
        assert guard.try_acquire()
        guard.start_heartbeat(uuid.uuid4())
        _wait_for("10 heartbeats (2 s, twice the server's timeout)", lambda: guard.beats >= 10 or guard.lost)
        assert not guard.lost
        assert scalar(engine, "SELECT count(*) FROM pg_stat_activity WHERE pid = :p", p=guard.backend_pid) == 1
        assert scalar(engine, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted") == 1
    finally:
        guard.release()
        strict.dispose()


def test_a_heartbeat_too_slow_for_the_servers_idle_timeout_is_refused_before_the_work(
    engine: sa.Engine, database_url: str, run_usecase: RunUsecase
) -> None:
    add_policy(engine, "free", "free_tier", 10, None)
    add_users(engine, [(1, "free", "active", False, False)])
    db = sa.engine.make_url(database_url).database
    with engine.connect() as conn:
        conn.execute(sa.text(f"ALTER DATABASE \"{db}\" SET idle_in_transaction_session_timeout = '15s'"))
        conn.commit()
    outcome = run_usecase("distribute-credits", pinned_key="2026-11", heartbeat_seconds=10)
    assert (outcome.status, outcome.exit_code) == ("failed", 2)
    assert outcome.error is not None
    assert "idle_in_transaction_session_timeout is 15 s" in outcome.error
    assert "CREDITJOBS_HEARTBEAT_SECONDS to at most 7.5" in outcome.error
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 0
    assert scalar(engine, "SELECT count(*) FROM job_runs") == 0
    assert scalar(engine, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0


def test_a_holder_without_heartbeat_is_not_a_live_holder_the_run_fails_retryably_instead_of_skipping(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    """A hung holder (or a half-open connection) must never turn the period into "skipped, exit 0"."""
    add_policy(engine, "free", "free_tier", 10, None)
    add_users(engine, [(1, "free", "active", False, False)])
    with engine.connect() as hung:  # holds the guard, then goes silent: no heartbeat on its connection
        pid = hung.execute(
            sa.text("SELECT pg_backend_pid() FROM (SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))) l"),
            {"k": guard_key("distribute-credits", "2026-11", 0)},
        ).scalar_one()
        _wait_for(
            "the holder to be silent for more than 3 heartbeats of 0.1 s",
            lambda: scalar(
                engine,
                "SELECT clock_timestamp() - state_change > interval '0.5 seconds' FROM pg_stat_activity WHERE pid = :p",
                p=pid,
            ),
        )
        outcome = run_usecase("distribute-credits", pinned_key="2026-11", heartbeat_seconds=0.1)
        hung.rollback()
    assert (outcome.status, outcome.exit_code) == ("failed", 1)
    assert outcome.error is not None
    assert f"held by server process {pid}, idle in transaction" in outcome.error
    assert "without a heartbeat" in outcome.error
    assert scalar(engine, "SELECT count(*) FROM job_runs") == 0
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 0


def test_a_heartbeating_holder_is_live_the_run_is_skipped(engine: sa.Engine, run_usecase: RunUsecase) -> None:
    from credit_jobs.adapters.run_guard import RunGuard

    add_policy(engine, "free", "free_tier", 10, None)
    add_users(engine, [(1, "free", "active", False, False)])
    guard = RunGuard(engine, guard_key("distribute-credits", "2026-11", 0), heartbeat_seconds=0.5)
    try:
        assert guard.try_acquire()
        guard.start_heartbeat(uuid.uuid4())
        _wait_for("4 heartbeats (longer than 3 intervals)", lambda: guard.beats >= 4)
        outcome = run_usecase("distribute-credits", pinned_key="2026-11", heartbeat_seconds=0.5)
    finally:
        guard.release()
    assert (outcome.status, outcome.exit_code) == ("skipped", 0)
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 0
    assert scalar(engine, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
