"""The database stopped in the middle of a run: the run exits 1 with a one-line reason, and the rerun completes.

Uses a server of its own (the session's shared server must stay up for the other tests).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from credit_jobs.adapters import database
from credit_jobs.adapters.embedded_database import EmbeddedPostgres, start_embedded
from credit_jobs.adapters.schema_migrations import upgrade_schema
from credit_jobs.usecases.check_invariants import check_invariants
from credit_jobs.usecases.demo_data import seed_demo_data
from tests.support import cli_process
from tests.support.ledger import ELIGIBLE_SQL, scalar

pytestmark = pytest.mark.slow


@pytest.fixture
def own_server() -> Iterator[EmbeddedPostgres]:
    server = start_embedded()
    try:
        yield server
    finally:
        server.stop()


def test_database_stopped_mid_run_fails_the_run_cleanly_and_the_rerun_completes(own_server: EmbeddedPostgres) -> None:
    url = own_server.url("postgres")
    upgrade_schema(url)
    engine = database.create_engine(url)
    seed_demo_data(engine, 20_000, seed=3, gifts=False)
    env = cli_process.cli_env(url, CREDITJOB_NAME="monthly", CREDITJOB_PERIOD_KEY="2026-11")

    victim = cli_process.start(["run", "distribute-credits", "--batch-size", "100"], env)
    deadline = time.monotonic() + 60
    while scalar(engine, "SELECT count(*) FROM credit_grants") == 0:
        assert victim.poll() is None, victim.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    engine.dispose()
    own_server.stop_server("fast")
    _, stderr = victim.communicate(timeout=120)

    assert victim.returncode == 1, stderr
    errors = cli_process.error_lines(stderr)
    assert len(errors) == 1, stderr
    assert errors[0].startswith("credit-jobs: error: run ")
    # Whichever notices the stopped server first names it: a chunk's statement, or the guard's check between chunks.
    assert "database error" in errors[0] or "the database session holding it ended" in errors[0], errors[0]
    assert "Traceback" not in stderr

    own_server.start_server()
    # The failed run's last line carries the counts it committed before the database went away.
    end = cli_process.log_lines(stderr)[-1]
    assert end["event"] == "run.finished"
    engine = database.create_engine(url)
    committed = scalar(engine, "SELECT count(*) FROM credit_grants WHERE cause_run_id = :r", r=end["job_run_id"])
    engine.dispose()
    assert committed > 0
    assert (end["processed"], end["granted"]) == (committed, committed)
    rerun = cli_process.run(["run", "distribute-credits"], env)
    assert rerun.returncode == 0, rerun.stderr
    engine = database.create_engine(url)
    try:
        eligible = scalar(engine, ELIGIBLE_SQL)
        assert scalar(engine, "SELECT count(*) FROM credit_grants") == eligible
        # The interrupted run could not record its failure (the database was gone); the rerun took it over.
        assert scalar(engine, "SELECT count(*) FROM job_runs WHERE status = 'running'") == 0
        assert "taken over" in scalar(engine, "SELECT error FROM job_runs WHERE status = 'failed'")
        # ... and its row kept the counts it wrote after its chunks: what it committed, to at most the last chunk
        # (committed just before the database went, whose counts could not be written any more).
        kept = scalar(engine, "SELECT stats FROM job_runs WHERE run_id = :r", r=end["job_run_id"])
        assert committed - 100 <= kept["processed"] <= committed, (kept, committed)
        assert kept["processed"] > 0, kept
        report = check_invariants(engine)
        assert report.ok, report.violations
    finally:
        engine.dispose()
