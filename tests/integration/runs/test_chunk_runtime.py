"""The chunk runtime against a real PostgreSQL: one bad row never blocks the others (bisect), a deadlock is retried
for its chunk, a failed run keeps its counts, sharded cleanup covers ownerless files, dry runs report only would_…
counts, and the run's "now" is the database's."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from structlog.testing import capture_logs

from credit_jobs.adapters import database
from credit_jobs.adapters.object_storage import LocalFileStorage, StorageRouter
from credit_jobs.domain.limits import MAX_BALANCE
from credit_jobs.domain.run_model import UsecaseSpec
from credit_jobs.domain.sharding import Shard
from credit_jobs.lifecycle.run_lifecycle import RunOutcome, RunRequest, execute_run
from credit_jobs.usecases.check_invariants import check_invariants
from credit_jobs.usecases.cleanup_storage import cleanup_storage
from credit_jobs.usecases.registry import get_usecase
from credit_jobs.usecases.void_grant import void_grant
from tests.support import cli_process
from tests.support.ledger import NOW, add_policy, fill_balance_to, rows, scalar
from tests.support.runs import RunUsecase

USERS = 20_000
POISONED = "12345"


def _seed_users(engine: sa.Engine, count: int) -> None:
    add_policy(engine, "free", "free_tier", 100, 30)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO credit_eligibility (user_id, plan_code, status) "
                "SELECT u, 'free', 'active' FROM generate_series(1, :n) u"
            ),
            {"n": count},
        )


def _events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == name]


# --- one bad row never blocks the others ------------------------------------------------------------------------


def test_one_poisoned_user_in_20k_fails_alone_and_a_rerun_after_the_fix_grants_it(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    _seed_users(engine, USERS)
    # Legitimately reachable under the bounds: the balance sits 10 below MAX_BALANCE, so the period's 100 credits
    # would break credit_accounts_balance_bounded for this user only.
    seed_grants = fill_balance_to(engine, POISONED, MAX_BALANCE - 10)
    assert check_invariants(engine).ok

    with capture_logs() as logs:
        outcome = run_usecase("distribute-credits", pinned_key="2026-11")

    assert (outcome.status, outcome.exit_code) == ("failed", 1)
    assert outcome.stats is not None
    assert (outcome.stats.processed, outcome.stats.failed) == (USERS - 1, 1)
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE period_key = '2026-11'") == USERS - 1
    (row,) = rows(engine, "SELECT status, stats, error FROM job_runs")
    assert row.status == "failed"
    assert row.stats["granted"] == USERS - 1
    assert row.stats["failed"] == 1
    assert [item["user_id"] for item in row.stats["failed_items"]] == [POISONED]
    assert "credit_accounts_balance_bounded" in row.stats["failed_items"][0]["reason"]
    (failed_line,) = _events(logs, "distribute.item_failed")
    assert failed_line["user_id"] == POISONED
    assert "credit_accounts_balance_bounded" in failed_line["reason"]
    assert check_invariants(engine).ok

    # The fix: a support agent voids one of the seed gifts; the rerun grants the one user left.
    void_grant(engine, seed_grants[0], request_id="make-room")
    rerun = run_usecase("distribute-credits", pinned_key="2026-11")
    assert (rerun.status, rerun.exit_code) == ("succeeded", 0)
    assert rerun.stats is not None
    assert (rerun.stats.details["granted"], rerun.stats.details["already_granted"]) == (1, USERS - 1)
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE period_key = '2026-11'") == USERS
    assert check_invariants(engine).ok


def test_several_bad_users_cost_only_a_logarithmic_number_of_extra_statements(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    _seed_users(engine, 4000)
    bad = [7, 1500, 1501, 3999]
    for user in bad:
        fill_balance_to(engine, user, MAX_BALANCE - 10)
    statements = _count_statements()
    with statements:
        outcome = run_usecase("distribute-credits", pinned_key="2026-11", batch_size=1000)
    assert outcome.stats is not None
    assert (outcome.stats.processed, outcome.stats.failed) == (4000 - len(bad), len(bad))
    assert sorted(i["user_id"] for i in outcome.stats.details["failed_items"]) == sorted(str(u) for u in bad)
    # 4 chunks of 1000; each bad user costs at most 2 statements per halving level (log2(1000) ≈ 10) plus one
    # look-up of its id: far below one statement per user.
    assert statements.chunk_statements <= 4 + len(bad) * (2 * 10 + 1)


def test_a_poisoned_grant_fails_alone_and_every_other_due_grant_expires(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO credit_grants (user_id, grant_type, amount, remaining, granted_at, expires_at, "
                "cause_request_id, idempotency_key) "
                "SELECT u, 'gift', 10, 10, :t, :t + interval '1 day' + u * interval '1 second', 'g-' || u, 'g-' || u "
                "FROM generate_series(1, 50) u"
            ),
            {"t": NOW - timedelta(days=20)},
        )
        conn.execute(
            sa.text("INSERT INTO credit_accounts (user_id, balance) SELECT u, 10 FROM generate_series(1, 50) u")
        )
        # The poison: an expiry entry written around the ledger (a botched manual fix) for a grant still live, so
        # expiring that grant breaks credit_entries_one_expiry.
        conn.execute(
            sa.text(
                "INSERT INTO credit_entries (user_id, grant_id, kind, amount, cause_request_id) "
                "SELECT user_id, grant_id, 'expiry', 1, 'manual-fix' FROM credit_grants WHERE user_id = '23'"
            )
        )
    poisoned = scalar(engine, "SELECT grant_id FROM credit_grants WHERE user_id = '23'")
    with capture_logs() as logs:
        outcome = run_usecase("expire-credits", batch_size=8)
    assert (outcome.status, outcome.exit_code) == ("failed", 1)
    assert outcome.stats is not None
    assert (outcome.stats.processed, outcome.stats.failed) == (49, 1)
    assert outcome.stats.details["failed_items"][0]["grant_id"] == poisoned
    assert outcome.stats.details["failed_items"][0]["user_id"] == "23"
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE expired_at IS NOT NULL") == 49
    assert scalar(engine, "SELECT remaining FROM credit_grants WHERE grant_id = :g", g=poisoned) == 10
    (line,) = _events(logs, "expire.item_failed")
    assert (line["grant_id"], line["user_id"]) == (poisoned, "23")
    assert "credit_entries_one_expiry" in line["reason"]
    (row,) = rows(engine, "SELECT stats FROM job_runs")
    assert row.stats["failed_items"][0]["grant_id"] == poisoned

    with engine.begin() as conn:  # the fix: remove the stray entry; the rerun expires the grant
        conn.execute(sa.text("DELETE FROM credit_entries WHERE cause_request_id = 'manual-fix'"))
    rerun = run_usecase("expire-credits", batch_size=8)
    assert (rerun.status, rerun.stats.processed if rerun.stats else None) == ("succeeded", 1)
    assert check_invariants(engine).ok


# --- a deadlock that still happens is retried for its chunk --------------------------------------------------------


def test_a_deadlock_in_a_chunk_is_retried_and_does_not_fail_the_run(
    engine: sa.Engine, run_usecase: RunUsecase, database_url: str
) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO credit_grants (user_id, grant_type, amount, remaining, granted_at, expires_at, "
                "cause_request_id, idempotency_key) "
                "SELECT u, 'gift', 10, 10, :t, :t, 'g-' || u, 'g-' || u FROM generate_series(1, 2) u"
            ),
            {"t": NOW - timedelta(days=1)},
        )
        conn.execute(sa.text("INSERT INTO credit_accounts (user_id, balance) VALUES (1, 10), (2, 10)"))
    other = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    with other.connect() as conn, capture_logs() as logs:
        # Another writer holds user 2's account and will ask for user 1's: a lock order the run does not follow.
        conn.execute(sa.text("SET deadlock_timeout = '60s'"))  # so the run, not this session, detects the cycle
        conn.execute(sa.text("SELECT 1 FROM credit_accounts WHERE user_id = '2' FOR UPDATE"))
        results: list[RunOutcome] = []
        runner = threading.Thread(target=lambda: results.append(run_usecase("expire-credits")))
        runner.start()
        _wait_until(lambda: _waiting_on_locks(engine) > 0)  # the run holds account 1 and waits for account 2
        conn.execute(sa.text("SELECT 1 FROM credit_accounts WHERE user_id = '1' FOR UPDATE"))  # the cycle
        conn.commit()
        runner.join(timeout=120)
    other.dispose()
    (outcome,) = results
    assert (outcome.status, outcome.exit_code) == ("succeeded", 0)
    assert outcome.stats is not None
    assert outcome.stats.processed == 2
    (retry,) = _events(logs, "chunk.retried")
    assert retry["sqlstate"] == "40P01"
    assert scalar(engine, "SELECT sum(balance) FROM credit_accounts") == 0
    assert check_invariants(engine).ok


# --- a failed run keeps its counts --------------------------------------------------------------------------------


def test_a_run_that_loses_its_guard_after_some_chunks_records_the_counts_committed(
    engine: sa.Engine, database_url: str
) -> None:
    _seed_users(engine, 1000)
    admin = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    chunks_done: list[int] = []

    with capture_logs() as logs:

        def progress(done: int, _total: int | None) -> None:
            chunks_done.append(done)
            if len(chunks_done) == 3:  # three chunks committed: end the session holding the run's guard
                with admin.connect() as conn:
                    conn.execute(
                        sa.text(
                            "SELECT pg_terminate_backend(pid) FROM pg_locks "
                            "WHERE locktype = 'advisory' AND granted AND database = "
                            "(SELECT oid FROM pg_database WHERE datname = current_database())"
                        )
                    )
                _wait_until(lambda: bool(_events(logs, "run.guard_lost")))  # the heartbeat noticed

        outcome = execute_run(
            RunRequest(
                usecase=get_usecase("distribute-credits"),
                job="monthly",
                pinned_key="2026-11",
                batch_size=100,
                heartbeat_seconds=0.05,
            ),
            lambda: database.create_engine(database_url),
            clock=lambda: NOW,
            progress=progress,
        )
    admin.dispose()
    assert (outcome.status, outcome.exit_code) == ("failed", 1)
    assert outcome.error is not None
    assert "lost the run guard" in outcome.error
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 300
    (row,) = rows(engine, "SELECT status, stats FROM job_runs")
    assert row.status == "failed"
    assert (row.stats["processed"], row.stats["granted"], row.stats["credits_granted"]) == (300, 300, 30_000)
    (end,) = _events(logs, "run.finished")
    assert (end["processed"], end["credits_granted"]) == (300, 30_000)


def test_a_lost_guard_stops_the_run_before_its_next_chunk_at_the_default_heartbeat(
    engine: sa.Engine, database_url: str
) -> None:
    """The twin of the test above at the production heartbeat (10 s): the guard's session ends after the third chunk
    and the run commits no fourth — it asks its guard before every chunk, not only at the next heartbeat. (Before,
    it went on for up to a heartbeat through fresh pooled connections, and could finish "succeeded" with a
    successor already holding the period.)"""
    _seed_users(engine, 1000)
    admin = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    chunks_done: list[int] = []

    def progress(done: int, _total: int | None) -> None:
        chunks_done.append(done)
        if len(chunks_done) == 3:
            with admin.connect() as conn:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_locks "
                        "WHERE locktype = 'advisory' AND granted AND database = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database())"
                    )
                )

    outcome = execute_run(
        RunRequest(usecase=get_usecase("distribute-credits"), job="monthly", pinned_key="2026-11", batch_size=100),
        lambda: database.create_engine(database_url),
        clock=lambda: NOW,
        progress=progress,
    )
    admin.dispose()
    assert (outcome.status, outcome.exit_code) == ("failed", 1)
    assert outcome.error is not None
    assert "lost the run guard" in outcome.error
    assert scalar(engine, "SELECT count(*) FROM credit_grants") == 300
    assert chunks_done == [100, 200, 300]


def test_a_run_failing_on_items_after_committing_chunks_records_both(
    engine: sa.Engine, run_usecase: RunUsecase
) -> None:
    _seed_users(engine, 1000)
    fill_balance_to(engine, 950, MAX_BALANCE - 10)  # a poisoned user in the last chunk
    outcome = run_usecase("distribute-credits", pinned_key="2026-11", batch_size=100)
    assert (outcome.status, outcome.exit_code) == ("failed", 1)
    (row,) = rows(engine, "SELECT stats, error FROM job_runs")
    assert (row.stats["processed"], row.stats["failed"], row.stats["granted"]) == (999, 1, 999)
    assert row.error == "1 items failed"


# --- sharded cleanup covers ownerless files; dry runs report only would_… counts --------------------------------


def test_four_cleanup_shards_delete_every_due_file_exactly_once_ownerless_ones_included(
    engine: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    files = []
    with engine.begin() as conn:
        for n in range(40):
            path = tmp_path / f"f{n}"
            path.write_bytes(b"x" * n)
            files.append(path)
            conn.execute(
                sa.text("INSERT INTO stored_files (user_id, uri, size_bytes, expires_at) VALUES (:u, :uri, :s, :e)"),
                # every third file has no owner (user_id NULL): a system export, an orphan after account deletion
                {"u": None if n % 3 == 0 else n, "uri": path.as_uri(), "s": n, "e": NOW - timedelta(days=1)},
            )
    spec = get_usecase("cleanup-storage")
    storage = StorageRouter({"file": LocalFileStorage()})
    sharded = UsecaseSpec(spec.name, spec.default_period, lambda e, ctx: cleanup_storage(e, ctx, storage), "")
    outcomes = [
        execute_run(
            RunRequest(usecase=sharded, job="cleanup", shard=Shard(i, 4), batch_size=3),
            lambda: database.create_engine(database_url),
            clock=lambda: NOW,
            ledger_clock=lambda: NOW,  # the files are due by NOW, whatever the database's clock says
        )
        for i in range(4)
    ]
    assert [o.status for o in outcomes] == ["succeeded"] * 4
    assert sum(o.stats.processed for o in outcomes if o.stats) == 40
    assert all(o.stats and o.stats.processed > 0 for o in outcomes)
    assert not any(path.exists() for path in files)
    assert scalar(engine, "SELECT count(*) FROM stored_files WHERE deleted_at IS NULL") == 0
    # each file was deleted by exactly one of the four runs
    by_run = dict(rows(engine, "SELECT delete_run_id, count(*) FROM stored_files GROUP BY delete_run_id"))
    assert {o.run_id: o.stats.processed for o in outcomes if o.stats} == by_run


def test_dry_runs_say_so_and_carry_only_would_counts_in_summary_and_audit_row(
    engine: sa.Engine, database_url: str
) -> None:
    add_policy(engine, "free", "free_tier", 100, 30)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO credit_eligibility (user_id, plan_code, status) "
                "SELECT u, 'free', 'active' FROM generate_series(1, 3) u"
            )
        )
    env = cli_process.cli_env(database_url, CREDITJOB_NAME="monthly")
    dist = cli_process.run(["run", "distribute-credits", "--period-key", "2026-11", "--dry-run"], env)
    assert dist.returncode == 0, dist.stderr
    assert "dry run" in dist.stdout
    assert "would_grant=3" in dist.stdout
    assert "would_grant_credits=300" in dist.stdout
    assert "credits_granted" not in dist.stdout
    assert "granted=" not in dist.stdout.replace("would_grant=", "")
    run_usecase_rows = rows(engine, "SELECT dry_run, stats FROM job_runs")
    ((dry, stats),) = run_usecase_rows
    assert dry is True
    assert stats["would_grant"] == 3
    assert stats["would_grant_credits"] == 300
    assert "granted" not in stats
    assert "credits_granted" not in stats
    assert stats["processed"] == 0
    end = cli_process.log_lines(dist.stderr)[-1]
    assert end["event"] == "run.finished"
    assert end["dry_run"] is True
    assert "credits_granted" not in end

    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO credit_grants (user_id, grant_type, amount, remaining, granted_at, expires_at, "
                "cause_request_id, idempotency_key) VALUES (1, 'gift', 5, 5, now() - interval '2 days', "
                "now() - interval '1 day', 'g', 'g')"
            )
        )
        conn.execute(sa.text("INSERT INTO credit_accounts (user_id, balance) VALUES (1, 5)"))
    exp = cli_process.run(["run", "expire-credits", "--dry-run"], cli_process.cli_env(database_url))
    assert exp.returncode == 0, exp.stderr
    assert "dry run" in exp.stdout
    assert "would_expire_grants=1" in exp.stdout
    assert "would_expire_credits=5" in exp.stdout
    assert "credits_expired" not in exp.stdout
    stats = scalar(engine, "SELECT stats FROM job_runs WHERE usecase = 'expire-credits'")
    assert stats["would_expire_credits"] == 5
    assert "credits_expired" not in stats
    assert scalar(engine, "SELECT remaining FROM credit_grants") == 5


# --- one clock, the database's ------------------------------------------------------------------------------------


def test_a_pod_clock_three_days_fast_expires_only_what_the_database_says_is_due_and_warns(
    engine: sa.Engine, database_url: str
) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO credit_grants (user_id, grant_type, amount, remaining, granted_at, expires_at, "
                "cause_request_id, idempotency_key) VALUES "
                "(1, 'gift', 5, 5, now() - interval '9 days', now() - interval '1 day', 'due', 'due'), "
                "(1, 'gift', 7, 7, now() - interval '9 days', now() + interval '2 days', 'later', 'later')"
            )
        )
        conn.execute(sa.text("INSERT INTO credit_accounts (user_id, balance) VALUES (1, 12)"))
    fast = timedelta(days=3)
    with capture_logs() as logs:
        outcome = execute_run(
            RunRequest(usecase=get_usecase("expire-credits"), job="expire"),
            lambda: database.create_engine(database_url),
            clock=lambda: datetime.now(UTC) + fast,
        )
    assert outcome.status == "succeeded"
    assert outcome.stats is not None
    assert outcome.stats.processed == 1
    assert scalar(engine, "SELECT remaining FROM credit_grants WHERE idempotency_key = 'later'") == 7
    (warning,) = _events(logs, "run.clock_skew")
    assert warning["log_level"] == "warning"
    assert 3 * 86400 - 120 < warning["skew_s"] < 3 * 86400 + 120
    # the run's times are the database's: the expiry and the audit row's start are not three days ahead
    expired_at = scalar(engine, "SELECT expired_at FROM credit_grants WHERE idempotency_key = 'due'")
    db_now = scalar(engine, "SELECT now()")
    assert abs((db_now - expired_at).total_seconds()) < 60
    started = scalar(engine, "SELECT started_at FROM job_runs")
    assert abs((db_now - started).total_seconds()) < 60


def test_no_skew_warning_when_the_pod_and_database_agree(engine: sa.Engine, database_url: str) -> None:
    with capture_logs() as logs:
        outcome = execute_run(
            RunRequest(usecase=get_usecase("expire-credits"), job="expire"),
            lambda: database.create_engine(database_url),
        )
    assert outcome.status == "succeeded"
    assert not _events(logs, "run.clock_skew")
    assert _events(logs, "run.started")


# --- helpers ---------------------------------------------------------------------------------------------------------


def _waiting_on_locks(engine: sa.Engine) -> int:
    return int(
        scalar(
            engine,
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE NOT l.granted AND a.datname = current_database()",
        )
    )


def _wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


class _count_statements:
    """Counts the chunk statements (distribute chunks and id look-ups) the run sends, by SQLAlchemy's event hook."""

    def __init__(self) -> None:
        self.chunk_statements = 0

    def _before(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "FROM credit_eligibility" in statement and "count(*) FROM credit_eligibility e WHERE true" not in statement:
            self.chunk_statements += 1

    def __enter__(self) -> _count_statements:
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", self._before)
        return self

    def __exit__(self, *_: object) -> None:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", self._before)


def test_the_cli_names_the_first_failed_item_in_its_one_error_line(engine: sa.Engine, database_url: str) -> None:
    _seed_users(engine, 50)
    fill_balance_to(engine, 17, MAX_BALANCE - 10)
    env = cli_process.cli_env(database_url, CREDITJOB_NAME="monthly")
    done = cli_process.run(["run", "distribute-credits", "--period-key", "2026-11", "--batch-size", "8"], env)
    assert done.returncode == 1, done.stderr
    (line,) = cli_process.error_lines(done.stderr)
    assert line.startswith("credit-jobs: error: run ")
    assert "1 items failed; first failed item: user_id=17" in line
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE period_key = '2026-11'") == 49
    (failed,) = [entry for entry in cli_process.log_lines(done.stderr) if entry["event"] == "distribute.item_failed"]
    assert failed["user_id"] == "17"
