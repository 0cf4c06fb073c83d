"""Reliability with real OS processes against the real PostgreSQL: concurrent runs, SIGKILLs at random points, a
SIGTERM, overlapping expiry runs. After each, the ledger invariants hold, nothing is lost and nothing is duplicated.

Each run is the real `credit-jobs` console script, configured through the environment exactly as the operator
configures a CronJob container.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from typing import Any

import pytest
import sqlalchemy as sa

from credit_jobs.adapters import database
from credit_jobs.usecases.check_invariants import check_invariants
from credit_jobs.usecases.demo_data import seed_demo_data
from tests.support import cli_process
from tests.support.ledger import ELIGIBLE_SQL, rows, scalar

pytestmark = pytest.mark.slow

USERS = 20_000


@pytest.fixture
def seeded(database_url: str) -> Any:
    engine = database.create_engine(database_url)
    seed_demo_data(engine, USERS, seed=11, gifts=False)
    yield engine
    engine.dispose()


def _wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def _assert_period_granted_exactly_once(engine: sa.Engine, period_key: str) -> None:
    eligible = scalar(engine, ELIGIBLE_SQL)
    assert scalar(engine, "SELECT count(*) FROM credit_grants WHERE period_key = :pk", pk=period_key) == eligible
    assert (
        scalar(engine, "SELECT count(DISTINCT user_id) FROM credit_grants WHERE period_key = :pk", pk=period_key)
        == eligible
    )
    report = check_invariants(engine)
    assert report.ok, report.violations


def test_eight_concurrent_runs_of_one_period_grant_every_user_exactly_once(database_url: str, seeded: Any) -> None:
    env = cli_process.cli_env(database_url, CREDITJOB_NAME="monthly", CREDITJOB_PERIOD_KEY="2026-11")
    procs = [cli_process.start(["run", "distribute-credits", "--batch-size", "250"], env) for _ in range(8)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err for _, err in results]
    _assert_period_granted_exactly_once(seeded, "2026-11")
    statuses = [r[0] for r in seeded.connect().execute(sa.text("SELECT status FROM job_runs")).all()]
    assert len(statuses) == 8
    assert set(statuses) <= {"succeeded", "skipped"}
    granted = scalar(seeded, "SELECT coalesce(sum((stats->>'granted')::int), 0) FROM job_runs")
    assert granted == scalar(seeded, ELIGIBLE_SQL)  # the runs together granted each user once


def test_without_the_guard_the_unique_index_alone_keeps_grants_exactly_once(database_url: str, seeded: Any) -> None:
    # Eight different job names: eight different guards, so all eight really write the same period at once.
    procs = [
        cli_process.start(
            ["run", "distribute-credits", "--batch-size", "250"],
            cli_process.cli_env(database_url, CREDITJOB_NAME=f"job-{n}", CREDITJOB_PERIOD_KEY="2026-11"),
        )
        for n in range(8)
    ]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err for _, err in results]
    _assert_period_granted_exactly_once(seeded, "2026-11")
    assert scalar(seeded, "SELECT count(*) FROM job_runs WHERE status = 'succeeded'") == 8
    granted = scalar(seeded, "SELECT sum((stats->>'granted')::int) FROM job_runs")
    assert granted == scalar(seeded, ELIGIBLE_SQL)


def test_sigkill_at_random_points_then_rerun_loses_and_duplicates_nothing(database_url: str, seeded: Any) -> None:
    rng = random.Random(2026)
    taken_over = 0
    for trial in range(1, 11):
        period_key = f"2026-{trial:02d}"
        env = cli_process.cli_env(database_url, CREDITJOB_NAME="monthly", CREDITJOB_PERIOD_KEY=period_key)
        victim = cli_process.start(["run", "distribute-credits", "--batch-size", "100"], env)
        _wait_for(
            lambda pk=period_key, proc=victim: (
                proc.poll() is not None
                or scalar(seeded, "SELECT count(*) FROM job_runs WHERE period_key = :pk", pk=pk) > 0
            )
        )
        time.sleep(rng.uniform(0.0, 0.6))
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)

        rerun = cli_process.run(["run", "distribute-credits", "--batch-size", "2000"], env)
        assert rerun.returncode == 0, rerun.stderr
        _assert_period_granted_exactly_once(seeded, period_key)
        runs = dict(
            seeded.connect()
            .execute(
                sa.text("SELECT status, count(*) FROM job_runs WHERE period_key = :pk GROUP BY status"),
                {"pk": period_key},
            )
            .all()
        )
        assert runs.get("running", 0) == 0
        assert runs["succeeded"] >= 1
        if runs.get("failed"):
            taken_over += 1
            error = scalar(
                seeded, "SELECT error FROM job_runs WHERE period_key = :pk AND status = 'failed'", pk=period_key
            )
            assert "taken over by run" in error
    assert taken_over >= 5, "most kills should land mid-run and leave a lease for the rerun to take over"


def test_two_overlapping_expiry_runs_never_expire_a_grant_twice(database_url: str, seeded: Any) -> None:
    with seeded.begin() as conn:  # 30k expired gift grants over 10k users
        conn.execute(
            sa.text(
                """
                WITH g AS (
                    INSERT INTO credit_grants (user_id, grant_type, amount, remaining, expires_at, cause_request_id)
                    SELECT 1 + i % 10000, 'gift', 10 + i % 7, 10 + i % 7, now() - interval '1 hour', 'seed'
                    FROM generate_series(1, 30000) AS i
                    RETURNING user_id, amount)
                INSERT INTO credit_accounts (user_id, balance) SELECT user_id, sum(amount) FROM g GROUP BY user_id
                """
            )
        )
    total = scalar(seeded, "SELECT sum(remaining) FROM credit_grants")
    procs = [
        cli_process.start(
            ["run", "expire-credits", "--batch-size", "200"], cli_process.cli_env(database_url, CREDITJOB_NAME=name)
        )
        for name in ("expire-a", "expire-b")
    ]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    assert scalar(seeded, "SELECT count(*) FROM credit_entries WHERE kind = 'expiry'") == 30_000
    assert scalar(seeded, "SELECT count(*) FROM credit_grants WHERE expired_at IS NULL") == 0
    expired = scalar(seeded, "SELECT sum((stats->>'credits_expired')::int) FROM job_runs")
    assert expired == total
    assert scalar(seeded, "SELECT sum(balance) FROM credit_accounts") == 0
    report = check_invariants(seeded)
    assert report.ok, report.violations


@pytest.mark.parametrize(
    ("args", "env_override", "message"),
    [
        (["run", "grant-everyone"], {}, "unknown usecase 'grant-everyone'"),
        (["run", "distribute-credits", "--period-key", "2026-13"], {}, "names no real monthly period"),
        (["run", "distribute-credits", "--period-key", "Nov-2026"], {}, "malformed monthly period key"),
        (["run", "distribute-credits", "--shard", "3/2"], {}, "shard 3/2 is out of range"),
        (["run", "distribute-credits", "--batch-size", "0"], {}, "batch size 0 is out of range"),
        (["run", "distribute-credits", "--batch-size", "many"], {}, "Invalid value for '--batch-size'"),
        (["run", "distribute-credits"], {"CREDITJOB_PERIOD": "fortnightly"}, "unknown period 'fortnightly'"),
        (["run", "distribute-credits"], {"CREDITJOB_TIME_ZONE": "Mars/Olympus"}, "unknown time zone"),
        (["run", "distribute-credits"], {"DATABASE_URL": "not a url"}, "malformed DATABASE_URL"),
        (["run", "distribute-credits"], {"DATABASE_URL": "mysql://u@h/db"}, "only PostgreSQL is supported"),
        # An unreachable server is retryable (exit 1): tests/integration/runs/test_connection_errors.py.
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    database_url: str, seeded: Any, args: list[str], env_override: dict[str, str], message: str
) -> None:
    env = cli_process.cli_env(database_url, **env_override)
    done = cli_process.run(args, env)
    assert done.returncode == 2, done.stderr
    errors = cli_process.error_lines(done.stderr)
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("credit-jobs: error: ")
    assert message in errors[0]
    assert "s3cret" not in done.stderr
    assert scalar(seeded, "SELECT count(*) FROM job_runs") == 0
    assert scalar(seeded, "SELECT count(*) FROM credit_grants") == 0


def test_a_run_killed_before_it_could_start_leaves_no_trace(database_url: str, seeded: Any) -> None:
    proc = cli_process.start(["run", "distribute-credits"], cli_process.cli_env(database_url))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert scalar(seeded, "SELECT count(*) FROM credit_grants") == 0
    assert check_invariants(seeded).ok
    rerun = subprocess.run(
        [cli_process.CLI, "run", "distribute-credits"],
        env=cli_process.cli_env(database_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr


# --- SIGTERM mid-run, as Kubernetes sends it on eviction, node drain, activeDeadlineSeconds or Job
# deletion: the run stops after its last committed chunk, records itself failed with the reason, logs run.finished,
# exits 1 — and a rerun grants the rest, each user once.


def _granted(engine: sa.Engine) -> int:
    return int(scalar(engine, "SELECT count(*) FROM credit_grants WHERE period_key = '2026-11'"))


def test_sigterm_mid_run_records_a_failed_run_exits_1_and_a_rerun_completes(database_url: str, seeded: Any) -> None:
    env = cli_process.cli_env(database_url, CREDITJOB_NAME="monthly", CREDITJOB_PERIOD_KEY="2026-11")
    run = cli_process.start(["run", "distribute-credits", "--batch-size", "20"], env)
    deadline = time.monotonic() + 60
    while _granted(seeded) == 0:  # some chunks committed: the run is mid-way
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "no chunk committed in 60 s"
        time.sleep(0.02)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=60)

    assert run.returncode == 1, stderr
    end = cli_process.log_lines(stderr)[-1]
    assert (end["event"], end["status"], end["exit_code"]) == ("run.finished", "failed", 1)
    assert "stopped by SIGTERM" in end["error"]
    (audit,) = rows(seeded, "SELECT status, error, stats FROM job_runs WHERE job = 'monthly'")
    assert audit.status == "failed"
    assert "stopped by SIGTERM" in audit.error
    granted = _granted(seeded)
    eligible = scalar(seeded, ELIGIBLE_SQL)
    assert 0 < granted < eligible  # stopped mid-way, not killed at once and not run to the end
    assert audit.stats["granted"] == granted  # the counts of every committed chunk, recorded
    assert check_invariants(seeded).ok

    rerun = cli_process.run(["run", "distribute-credits", "--batch-size", "500"], env)
    assert rerun.returncode == 0, rerun.stderr
    assert _granted(seeded) == eligible
    assert scalar(seeded, "SELECT count(DISTINCT user_id) FROM credit_grants WHERE period_key = '2026-11'") == eligible
    assert check_invariants(seeded).ok
