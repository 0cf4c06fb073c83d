"""A run whose network path to PostgreSQL goes silent mid-run — both directions, or only the server's answers — fails
(exit 1) within the network timeout and its stranded transactions end on the server within the idle-in-transaction
timeout, both at their production defaults (CREDITJOBS_NETWORK_TIMEOUT_SECONDS 30 s,
CREDITJOBS_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS 60 s); the rerun then completes the period exactly.

Before: the run waited as long as the partition lasted (the kernel's ~2 h 11 min for a real half-open socket), its
chunk transaction stayed `idle in transaction` holding row locks, and a run of another period failed behind them.

The partition is real (tests/support/network_partition.py): the run is a real process in its own network namespace,
every packet in the cut direction is dropped by the kernel. The deadlines below (150 s) are far beyond the defaults, to
tell "bounded" from "waits for the partition to end", not to time anything.
"""

from __future__ import annotations

import subprocess
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from credit_jobs.adapters import database
from credit_jobs.usecases.check_invariants import check_invariants
from credit_jobs.usecases.demo_data import seed_demo_data
from tests.support import cli_process
from tests.support.ledger import ELIGIBLE_SQL, scalar
from tests.support.network_partition import Direction, Partition, stranded_lock_holders

pytestmark = pytest.mark.slow

BOUND_SECONDS = 150  # several times the defaults: only a run that waits for the partition itself gets near it


@pytest.mark.parametrize("direction", ["both", "to_client"])
def test_a_partition_mid_run_fails_the_run_within_the_network_timeout_and_frees_its_locks(
    database_url: str, direction: Direction
) -> None:
    engine = database.create_engine(database_url)
    seed_demo_data(engine, 20_000, seed=3, gifts=False)
    name = make_url(database_url).database
    assert name is not None
    with Partition(database_url) as partition:
        env = cli_process.cli_env(partition.url(), CREDITJOB_NAME="monthly", CREDITJOB_PERIOD_KEY="2026-11")
        victim = subprocess.Popen(
            partition.command(cli_process.CLI, "run", "distribute-credits", "--batch-size", "50"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while scalar(engine, "SELECT count(*) FROM credit_grants") < 500:
            assert victim.poll() is None, victim.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        partition.cut(direction)
        cut_at = time.monotonic()

        try:
            _, stderr = victim.communicate(timeout=BOUND_SECONDS)
        except subprocess.TimeoutExpired:
            victim.kill()
            victim.communicate()
            pytest.fail(f"the run still waited {BOUND_SECONDS} s after the partition began")
        failed_after = time.monotonic() - cut_at
        assert victim.returncode == 1, stderr
        errors = cli_process.error_lines(stderr)
        assert len(errors) == 1, stderr
        assert errors[0].startswith("credit-jobs: error: run "), stderr
        # Whichever the cut met first, the run fails retryably (exit 1) with one line: the network timeout on the
        # chunk's connection (named: CREDITJOBS_NETWORK_TIMEOUT_SECONDS), a connection the pool opened to replace a
        # dead one (its connect timeout, or the connection found closed), or the guard's check before a chunk.
        assert "database error" in errors[0] or "lost the run guard" in errors[0], errors[0]
        assert "Traceback" not in stderr

        # The server ends the stranded transactions that hold anything (the chunk's row locks, the guard's advisory
        # lock): their idle timeout was set by their first statement. (One stranded between its BEGIN and that
        # statement holds nothing; it lingers until TCP notices — docs/env-and-ops.md, faults.)
        while stranded_lock_holders(engine, name):
            assert time.monotonic() - cut_at < BOUND_SECONDS, "stranded transactions were never ended"
            time.sleep(0.5)
        print(
            f"{direction}: run failed {failed_after:.1f} s after the cut; sessions freed after "
            f"{time.monotonic() - cut_at:.1f} s"
        )

    rerun = cli_process.run(
        ["run", "distribute-credits"],
        cli_process.cli_env(database_url, CREDITJOB_NAME="monthly", CREDITJOB_PERIOD_KEY="2026-11"),
    )
    assert rerun.returncode == 0, rerun.stderr
    try:
        assert scalar(engine, "SELECT count(*) FROM credit_grants") == scalar(engine, ELIGIBLE_SQL)
        report = check_invariants(engine)
        assert report.ok, report.violations
    finally:
        engine.dispose()


def test_the_engine_sets_a_network_deadline_unless_the_url_sets_its_own(database_url: str) -> None:
    """libpq's keepalive and tcp_user_timeout parameters reach every connection; the URL's own parameters win."""
    defaults = database.create_engine(database_url)
    own_url = make_url(database_url).update_query_dict({"keepalives_idle": "7", "tcp_user_timeout": "9000"})
    own = database.create_engine(own_url.render_as_string(hide_password=False))
    off = database.create_engine(database_url, network=database.NetworkTimeout(0))
    try:
        with defaults.connect() as conn:
            info = conn.connection.driver_connection.info  # type: ignore[union-attr]
            params = info.get_parameters()
            assert (params["keepalives_idle"], params["tcp_user_timeout"]) == ("10", "30000")
        with own.connect() as conn:
            params = conn.connection.driver_connection.info.get_parameters()  # type: ignore[union-attr]
            assert (params["keepalives_idle"], params["tcp_user_timeout"]) == ("7", "9000")
        with off.connect() as conn:
            params = conn.connection.driver_connection.info.get_parameters()  # type: ignore[union-attr]
            assert "tcp_user_timeout" not in params
        with defaults.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        for engine in (defaults, own, off):
            engine.dispose()
